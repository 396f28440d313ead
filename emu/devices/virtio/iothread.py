"""A device thread woken by eventfds: how a queue notification reaches a device model.

An eventfd (eventfd(2)) is a 64-bit counter behind a file descriptor: a write of 8 bytes adds
to it, a read returns the sum and zeroes it, and poll says "readable" while it is non-zero. It
is the kernel's cheapest doorbell between threads, and between the kernel and a thread:

  tcg      the guest's store to a queue's notification register reaches emu's IO hook on the
           vCPU thread, which writes the queue's eventfd (`VirtioDevice.notify`);
  kvm      the same store is a VM exit: KVM_RUN returns to Python, which writes the eventfd;
           with an ioeventfd (KVM_IOEVENTFD, Documentation/virt/kvm/api.rst §4.59) KVM itself
           writes it inside the exit handler and resumes the guest: no exit reaches emu.

Either way the device's thread, blocked in epoll on its queues' eventfds and its backend's
descriptors (a tap, a socket), wakes and serves the queue while the vCPU runs on. Several
kicks before the thread runs add up in the counter and cost one wake-up. The device models
are not thread-safe, so the thread takes the machine's device lock first (QEMU's "big QEMU
lock"); the vCPU thread takes it for every device access and drops it while guest code runs.
"""

from __future__ import annotations

import os
import selectors
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .device import VirtioDevice


@dataclass
class DeviceThread:
    """One thread per virtio device: an eventfd per queue, plus whatever the backend watches."""

    device: VirtioDevice
    lock: threading.RLock
    eventfds: list[int] = field(default_factory=list)
    wakeups: int = 0  # times the thread woke for its queues (kicks coalesce into fewer)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector, repr=False)
    _stop_fd: int = -1
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.eventfds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in self.device.queues]
        self._stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        for index, fd in enumerate(self.eventfds):
            self._selector.register(fd, selectors.EVENT_READ, index)
        self._selector.register(self._stop_fd, selectors.EVENT_READ, None)

    def notify(self, index: int) -> None:
        """The driver kicked queue `index` (called on the vCPU thread, from an exit or a hook)."""
        os.eventfd_write(self.eventfds[index], 1)

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` (under the device lock, on this thread) whenever `fd` is readable."""
        self._selector.register(fd, selectors.EVENT_READ, callback)

    def unwatch(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except KeyError:
            pass

    def start(self) -> None:
        """From now on the transport's notifications go to the eventfds, and this thread serves them."""
        self.device.notifier = self
        self._thread = threading.Thread(target=self._run, name=f"emu-{self.device.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after the work it is doing (the machine is shutting down)."""
        if self._thread is not None:
            os.eventfd_write(self._stop_fd, 1)
            self._thread.join(timeout=5)
            self._thread = None
        self.device.notifier = None

    def close(self) -> None:
        self.stop()
        self._selector.close()
        for fd in (*self.eventfds, self._stop_fd):
            os.close(fd)
        self.eventfds = []

    def _run(self) -> None:
        while True:
            for key, _events in self._selector.select():
                if key.data is None:
                    return
                try:
                    self._serve(key)
                except Exception as error:  # noqa: BLE001 - a device bug must not hang the guest silently
                    print(f"emu: {self.device.name}: device thread failed: {error!r}", file=sys.stderr)
                    return

    def _serve(self, key: selectors.SelectorKey) -> None:
        if isinstance(key.data, int):  # a queue's eventfd
            try:
                kicks = os.eventfd_read(key.fd)
            except BlockingIOError:
                return
            self.wakeups += 1
            with self.lock:
                self.device.queue_notified(key.data, kicks)
        else:
            with self.lock:
                key.data()
