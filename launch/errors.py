"""Errors a user can fix. Entry points print them as one line and exit with `exit_code`."""

import re


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


def report_and_exit(exc: UserError) -> None:
    """Log a user error as one line on stderr and exit with its code (no traceback); the logger's
    prefix says which program, and which rank of several, failed (launch.log)."""
    from launch import log

    log.get().error(str(exc))
    raise SystemExit(exc.exit_code)


_IPV4 = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})\b")
_LOST_TF_TASK = re.compile(r"unhealthy.*?/job:(\w+)/replica:\d+/task:(\d+)", re.S)
_TF_PEER = re.compile(r"from remote target /job:(\w+)/replica:\d+/task:(\d+)")  # a collective's lost peer
_GENERIC = ("Graph execution error", "Detected at node")  # TensorFlow's headers, which say nothing of the cause
_SIGN_OFF = re.compile(r"[\s:]*GLHF!\s*[^\x00-\x7f]*")  # gloo ends some socket errors with "GLHF! 🏖️"


def describe(exc: BaseException, hosts: list[str] = ()) -> str:
    """A framework's exception as one line: its type and cause, with peers' addresses named
    (gloo says "Connection reset by peer [10.0.0.3]:port"; TensorFlow names the task that died, by
    its heartbeats or by a collective that could not reach it: a worker task is the rank of that
    number, on `hosts[rank]` where the world tells each rank's host)."""
    text = str(exc)
    lost = _LOST_TF_TASK.search(text)
    if lost:
        cause = f"lost {_task(lost, hosts)}: it stopped sending heartbeats (its process or host is gone)"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        cause = next((line for line in lines if not line.startswith(_GENERIC)), lines[0] if lines else "")
        cause = _SIGN_OFF.sub("", cause)[:300]
        peer = _TF_PEER.search(text)
        if peer:
            cause = f"lost {_task(peer, hosts)} ({cause})"
    return f"{type(exc).__name__}: {_IPV4.sub(_name_address, cause)}"


def _task(found: re.Match, hosts: list[str]) -> str:
    kind, task = found[1], int(found[2])
    if kind != "worker":
        return f"the {kind} task {task}"
    return f"rank {task}" + (f" on {hosts[task]}" if task < len(hosts) else "")


def _name_address(match: re.Match) -> str:
    import socket

    try:
        return f"{match[1]} ({socket.gethostbyaddr(match[1])[0]})"
    except OSError:
        return match[1]
