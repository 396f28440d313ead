"""What every virtio device shares, whatever its transport (VIRTIO 1.2 §2.1-2.6, §3.1).

Device status (§2.1): the driver walks it ACKNOWLEDGE -> DRIVER -> FEATURES_OK -> DRIVER_OK;
writing 0 resets the device. The device sets DEVICE_NEEDS_RESET when it can no longer work
(here: the driver broke a virtqueue rule), and the driver sets FAILED when it gives up.

Feature bits (§2, §6): 64 of them, offered by the device and accepted by the driver before
FEATURES_OK. VIRTIO_F_VERSION_1 (32) marks a 1.x driver; INDIRECT_DESC (28) and EVENT_IDX
(29) change how the rings are read (emu.devices.virtio.queue). A device refuses FEATURES_OK
if the driver accepted a bit it did not offer.

Virtqueues are configured by the transport (size, the three ring addresses, enable) and
become `Virtqueue`s when enabled. A notification for queue N calls `notify(N)`, which wakes
the device's thread (or serves the queue inline when it has none); the device model answers
`handle(queue_index, queue)`. Interrupts go back through the transport's `interrupt(isr_bits)`:
bit 0 for used buffers, bit 1 for a configuration change.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ...memory import GuestMemory
from .queue import ChainError, Virtqueue

ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, DEVICE_NEEDS_RESET, FAILED = 1, 2, 4, 8, 64, 128
F_INDIRECT_DESC, F_EVENT_IDX, F_VERSION_1 = 1 << 28, 1 << 29, 1 << 32
ISR_QUEUE, ISR_CONFIG = 1, 2


class Notifier(Protocol):
    def notify(self, index: int) -> None:
        """Wake the device's thread for queue `index` (write the queue's eventfd)."""


@dataclass
class QueueConfig:
    """One queue's registers as the transport exposes them (§4.1.4.3 queue_*)."""

    max_size: int
    size: int = 0
    desc: int = 0
    driver: int = 0  # the available ring
    device: int = 0  # the used ring
    enabled: bool = False
    queue: Virtqueue | None = None

    def __post_init__(self) -> None:
        self.size = self.max_size


@dataclass
class QueueCounters:
    notifications: int = 0  # the driver's kicks, however they arrived
    exits: int = 0  # kicks that cost a VM exit served in Python (none through an ioeventfd)
    requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    interrupts: int = 0


@dataclass
class VirtioDevice:
    """A device model: its ID (§5), features, queues, and configuration space bytes."""

    memory: GuestMemory
    name: str = "virtio"
    device_id: int = 0
    features: int = F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX
    queue_sizes: tuple[int, ...] = (256,)
    interrupt: Callable[[int], None] = lambda bits: None  # set by the transport
    status: int = 0
    driver_features: int = 0
    config_generation: int = 0
    queues: list[QueueConfig] = field(default_factory=list)
    counters: list[QueueCounters] = field(default_factory=list)
    resets: int = 0
    errors: list[str] = field(default_factory=list)
    notifier: Notifier | None = None  # the device's thread (emu.devices.virtio.iothread), or None: inline


    def __post_init__(self) -> None:
        self.queues = [QueueConfig(size) for size in self.queue_sizes]
        self.counters = [QueueCounters() for _ in self.queue_sizes]

    # --- status and features ----------------------------------------------------------------
    def set_status(self, value: int) -> None:
        if value == 0:
            self.reset()
            return
        if value & FEATURES_OK and not self.status & FEATURES_OK and not self.features_acceptable():
            value &= ~FEATURES_OK  # the driver reads it back and sees the refusal (§3.1.1 step 6)
        if value & DRIVER_OK and not self.status & DRIVER_OK:
            self.status = value | (self.status & DEVICE_NEEDS_RESET)
            self.activate()
            return
        self.status = value | (self.status & DEVICE_NEEDS_RESET)

    def features_acceptable(self) -> bool:
        return not self.driver_features & ~self.features

    def reset(self) -> None:
        self.status = self.driver_features = 0
        self.resets += 1
        self.queues = [QueueConfig(size) for size in self.queue_sizes]
        self.on_reset()

    def enable_queue(self, index: int) -> None:
        """The driver set queue_enable: the rings become a Virtqueue (or NEEDS_RESET if bad)."""
        q = self.queues[index]
        try:
            q.queue = Virtqueue(self.memory, q.size, q.desc, q.driver, q.device,
                                event_idx=bool(self.driver_features & F_EVENT_IDX),
                                indirect=bool(self.driver_features & F_INDIRECT_DESC))  # fmt: skip
            q.enabled = True
        except ChainError as error:
            self.needs_reset(f"queue {index}: {error}")

    # --- work ---------------------------------------------------------------------------------
    def notify(self, index: int) -> None:
        """A transport saw the driver write queue `index`'s notification register: a VM exit
        (kvm without ioeventfd) or an IO hook (tcg). With a device thread, this only signals
        the queue's eventfd; without one, the queue is served here and now."""
        if not 0 <= index < len(self.queues):
            return
        self.counters[index].exits += 1
        if self.notifier is not None:
            self.notifier.notify(index)
        else:
            self.queue_notified(index)

    def queue_notified(self, index: int, kicks: int = 1) -> None:
        """Serve queue `index` after `kicks` notifications (an eventfd's count adds them up)."""
        if not 0 <= index < len(self.queues):
            return
        self.counters[index].notifications += kicks
        q = self.queues[index]
        if q.queue is None or not self.status & DRIVER_OK or self.status & DEVICE_NEEDS_RESET:
            return
        try:
            self.handle(index, q.queue)
        except ChainError as error:
            self.needs_reset(f"queue {index}: {error}")

    def complete(self, index: int, queue: Virtqueue, chain, written: int) -> None:
        """Give a chain back and interrupt the driver if it asked for it."""
        queue.push(chain, written)
        counters = self.counters[index]
        counters.requests += 1
        counters.bytes_written += written
        if queue.needs_interrupt():
            counters.interrupts += 1
            self.interrupt(ISR_QUEUE)

    def needs_reset(self, reason: str) -> None:
        """The driver broke the protocol: stop using the device until it resets it (§2.1.2)."""
        line = f"emu: {self.name}: {reason}: device needs reset"
        self.errors.append(line)
        print(line, file=sys.stderr)
        self.status |= DEVICE_NEEDS_RESET
        if self.status & DRIVER_OK:
            self.interrupt(ISR_CONFIG)

    # --- what a device type provides ------------------------------------------------------------
    def handle(self, index: int, queue: Virtqueue) -> None:
        """Serve the available chains of queue `index`."""

    def activate(self) -> None:
        """DRIVER_OK was set: the driver is ready."""

    def on_reset(self) -> None:
        """The device was reset."""

    def config_read(self, offset: int, size: int) -> int:
        return 0

    def config_write(self, offset: int, size: int, value: int) -> None:
        pass

    @property
    def config_size(self) -> int:
        return 0
