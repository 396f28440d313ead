"""Test-session hooks: the closing summary says how many kvm tests ran."""

from __future__ import annotations

from guestenv import KVM_OK, KVM_WHY


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many kvm tests ran, so CI output shows whether the kvm path was exercised."""
    def is_kvm(report) -> bool:
        marked = "kvm" in getattr(report, "keywords", {}) or "kvm" in report.nodeid  # @pytest.mark.kvm, or [kvm]
        return marked and getattr(report, "when", "call") in ("call", "setup")

    ran = sum(1 for k in ("passed", "failed") for r in terminalreporter.stats.get(k, []) if is_kvm(r))
    skipped = sum(1 for r in terminalreporter.stats.get("skipped", []) if is_kvm(r))
    terminalreporter.write_line(f"kvm tests: {ran} ran, {skipped} skipped" + ("" if KVM_OK else f" ({KVM_WHY})"))
