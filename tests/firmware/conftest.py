"""Shared settings for the firmware tests."""


def pytest_configure(config):
    # The QEMU tests carry @pytest.mark.timeout; without the pytest-timeout plugin the mark
    # is documentation only (each test also bounds its subprocess), so register it to keep
    # pytest from warning about an unknown mark.
    if not config.pluginmanager.hasplugin("timeout"):
        config.addinivalue_line("markers", "timeout(seconds): per-test time limit")
