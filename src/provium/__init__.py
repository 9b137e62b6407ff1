"""Provium: a test harness for software that needs a real operating system under it."""

__version__ = "0.1.0"
