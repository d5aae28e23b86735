"""Fault tests: real services the tests kill, cut and restart, with runs in flight."""
