"""The CLI's own error, in a module of its own so that every subcommand can name it
without importing the run machinery (cli/run.py) before it is needed."""

from __future__ import annotations

from provium.errors import ConfigError


class UserError(ConfigError):
    """Bad input from the user: printed as `provium: <message>`, exit 2."""
