"""The device model shared by both accelerators: one module per device, as kvmtool does."""
