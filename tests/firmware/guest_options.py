"""What a firmware guest needs on the command line, the same for emu and for QEMU (and for
firmware/capture-expected.sh, which keeps its own copy in shell): the devices it drives."""

DEVICES = {"virtio64": ["-device", "virtio-rng-pci"]}
