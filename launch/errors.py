"""Errors a user can fix. Entry points print them as one line and exit with `exit_code`."""


class UserError(Exception):
    """A problem with the user's input or environment, with the fix in its message."""

    exit_code = 1


class ConfigError(UserError):
    """A bad config file or override: usage errors exit 2, like argparse's."""

    exit_code = 2


class DataError(UserError):
    """Dataset files missing, corrupt or failing verification."""

    exit_code = 3


class WorldError(UserError):
    """The launcher's environment is inconsistent or incomplete."""

    exit_code = 4


def report_and_exit(prog: str, exc: UserError, where: str = "") -> None:
    """Print a user error as one line on stderr and exit with its code (no traceback). `where`
    ("rank 1 on node2: ") says which rank of several failed."""
    import sys

    print(f"{prog}: error: {where}{exc}", file=sys.stderr)
    raise SystemExit(exc.exit_code)
