"""Tests of the kvm accelerator (a package, so its conftest does not shadow tests/conftest.py)."""
