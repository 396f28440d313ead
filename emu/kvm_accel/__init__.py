"""The kvm accelerator: guest code runs on the host CPU through Linux KVM (/dev/kvm), via ctypes.

- `api`: ioctl numbers and structs of the KVM API (Documentation/virt/kvm/api.rst).
- `vm.KvmAccelerator`: the VM fd, memory slots, CPUID; creates vCPUs.
- `vcpu.KvmVCpu`: the KVM_RUN loop, state transfer, interrupt injection, kicks.
"""

from .api import KvmError
from .vcpu import KvmVCpu
from .vm import KvmAccelerator

__all__ = ["KvmAccelerator", "KvmError", "KvmVCpu"]
