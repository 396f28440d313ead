"""virtio: paravirtual devices whose requests travel through rings in guest memory.

Virtual I/O Device (VIRTIO) Version 1.2 (OASIS, 2022). A driver puts buffers it owns into a
virtqueue and notifies the device; the device takes them, does the work, returns them through
the same queue and interrupts. One exit per batch of requests instead of one per register
access is what makes virtio fast under a hypervisor, and the same rings serve every transport
(PCI, MMIO) and every device type.

  queue.py  the split virtqueue (§2.7): descriptor table, available and used rings, every
            chain validated before the device touches guest memory
"""

from .queue import Buffer, ChainError, DescriptorChain, Virtqueue

__all__ = ["Buffer", "ChainError", "DescriptorChain", "Virtqueue"]
