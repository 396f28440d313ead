"""Test-session hooks: the closing summary says how many kvm tests ran."""

from __future__ import annotations

import os

import pytest
from guestenv import KVM_OK, KVM_WHY


def pytest_collection_modifyitems(config, items):
    """Linux boots beyond the main ones take minutes each on tcg: they run when asked
    (EMU_LINUX_EXTRA=1), so that the suite stays within its 20 minutes on two cores."""
    if os.environ.get("EMU_LINUX_EXTRA") == "1":
        return
    skip = pytest.mark.skip(reason="a further Linux boot (minutes on tcg): set EMU_LINUX_EXTRA=1 to run it")
    for item in items:
        if "linux_extra" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many kvm tests ran, so CI output shows whether the kvm path was exercised."""
    def is_kvm(report) -> bool:
        marked = "kvm" in getattr(report, "keywords", {}) or "kvm" in report.nodeid  # @pytest.mark.kvm, or [kvm]
        return marked and getattr(report, "when", "call") in ("call", "setup")

    ran = sum(1 for k in ("passed", "failed") for r in terminalreporter.stats.get(k, []) if is_kvm(r))
    skipped = sum(1 for r in terminalreporter.stats.get("skipped", []) if is_kvm(r))
    terminalreporter.write_line(f"kvm tests: {ran} ran, {skipped} skipped" + ("" if KVM_OK else f" ({KVM_WHY})"))
