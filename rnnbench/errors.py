"""One error format and one exit-code convention for every command (docs/reliability.md, "Exit codes").

What the user can fix (a config value, a data file, a checkpoint, a path or name given to a command) is a
`UserError`: the command prints

    Error in <kind>:
    <what is wrong, the value, what is allowed or what to do>

with no traceback and exits 2 (`USER_ERROR`, through `fail`). Anything else is a crash: Python's traceback, exit 1. The
lowest floor of the package, so every floor's errors can be one.
"""

from __future__ import annotations

import sys

USER_ERROR = 2  # the input is at fault; argparse's own usage errors exit 2 as well
CRASHED = 1  # an uncaught exception, or a sweep some of whose jobs did not complete


class UserError(Exception):
    """An error the message alone lets the user fix; `kind` names what is at fault."""

    kind = "input"


class ConfigError(UserError, ValueError):
    """A config value that is well-typed but not allowed."""

    kind = "config"


def fail(error: UserError) -> int:
    """Print `error` in the one format, to stderr; the exit code to return."""
    print(f"Error in {error.kind}:\n{error}", file=sys.stderr)
    return USER_ERROR
