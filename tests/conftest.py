"""Shared fixtures: which accelerators this host can run, and a recording IoHandler."""

from __future__ import annotations

import os

import pytest


def kvm_usable() -> tuple[bool, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, f"no usable /dev/kvm ({err.strerror})"
    os.close(fd)
    return True, ""


KVM_OK, KVM_WHY = kvm_usable()
requires_kvm = pytest.mark.skipif(not KVM_OK, reason=KVM_WHY)

ACCELS = [pytest.param("tcg", id="tcg"), pytest.param("kvm", id="kvm", marks=[requires_kvm, pytest.mark.kvm])]


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    """Say how many kvm tests ran, so CI output shows whether the kvm path was exercised."""
    def is_kvm(report) -> bool:
        return "kvm" in report.nodeid and getattr(report, "when", "call") in ("call", "setup")

    ran = sum(1 for k in ("passed", "failed") for r in terminalreporter.stats.get(k, []) if is_kvm(r))
    skipped = sum(1 for r in terminalreporter.stats.get("skipped", []) if is_kvm(r))
    terminalreporter.write_line(f"kvm tests: {ran} ran, {skipped} skipped" + ("" if KVM_OK else f" ({KVM_WHY})"))
