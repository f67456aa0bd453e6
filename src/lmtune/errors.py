"""Error types. A UserError is the user's to fix (bad input, bad config): exit code 2, one clear
message, no traceback. Anything else is an internal failure: exit code 1."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix. `problems` holds every problem found, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)

    def render(self) -> str:
        lines = [f"error: {self.args[0]}"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class ConfigError(UserError):
    """Invalid configuration: every problem names the key the user typed."""


class DataError(UserError):
    """Invalid data: every problem is `file:line: what is wrong (field)`."""
