"""Device model tests: each device driven through the port bus as a guest drives it."""
