"""Before and around the frameworks' rendezvous: fail in time, with one line, instead of hanging.

A rank that cannot resolve the master's name, or reach its port, would otherwise wait inside
torch's or TensorFlow's rendezvous (TensorFlow's chief waits for missing workers without a bound).
Every rank resolves the master first; non-chief ranks then wait for its port up to dist.timeout; and
the whole rendezvous runs under the same deadline. Each failure names the rank, its host, and the
address it tried.

On a host with several interfaces, gloo listens on the address the host's *name* resolves to,
which may be an interface the other hosts cannot reach; unless the user chose one
(GLOO_SOCKET_IFNAME), the interface that routes to the master is chosen. NCCL picks its interface
itself and honours NCCL_SOCKET_IFNAME; TensorFlow uses the addresses its TF_CONFIG names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time

from launch import log
from launch.cluster.world import World
from launch.errors import UserError, WorldError, describe

_POLL_S = 0.5
_SIOCGIFADDR = 0x8915


def resolve(host: str) -> str:
    """The IPv4 address of `host`, or a WorldError with the fix (the trainer adds rank and host)."""
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise WorldError(
            f"cannot resolve the master's name {host!r} ({exc.strerror or exc}): "
            "use a name every node resolves (DNS or /etc/hosts), or its IP address"
        ) from None


def check_master(world: World, host: str, port: int, timeout: float) -> None:
    """Resolve the master on every rank; on the others, wait until its port accepts connections."""
    if world.size == 1:
        return
    address = resolve(host)
    if world.is_chief:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=min(5.0, timeout)):
                return
        except OSError as exc:
            if time.monotonic() + _POLL_S > deadline:
                raise WorldError(
                    f"cannot reach the master at {host}:{port} ({address}) within "
                    f"{timeout:g}s (dist.timeout): {exc.strerror or exc}; check that rank 0 runs, that "
                    "the port is open in the firewall and that the name is rank 0's address"
                ) from None
            time.sleep(_POLL_S)  # the master may simply start later: poll until the deadline


def choose_gloo_interface(world: World, master: str) -> None:
    """Across nodes, set GLOO_SOCKET_IFNAME (unless the user did) to the interface that reaches the master."""
    if world.num_nodes == 1 or "GLOO_SOCKET_IFNAME" in os.environ:
        return
    name = interface_towards(resolve(master))
    if name:
        os.environ["GLOO_SOCKET_IFNAME"] = name


def local_address(towards: str) -> str:
    """This host's address that the kernel picks to reach `towards`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((towards, 9))  # UDP connect sends nothing: it only chooses the route
        return probe.getsockname()[0]


def interface_towards(address: str) -> str | None:
    """The name of the local interface whose address the kernel picks to reach `address`."""
    local = local_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                request = struct.pack("256s", name.encode()[:15])
                if socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)[20:24]) == local:
                    return name
    return None


# The watchdog: a separate process, since the rendezvous can block inside a framework's C++ call
# while holding the GIL (TensorFlow's does), where no Python thread or signal handler would run.
# It waits for its stdin to close (the rendezvous ended, or this process died) or the deadline.
# It ends the rank with SIGALRM, whose default action terminates it like SIGKILL, but which says
# "a timer ran out" to a launcher, not "the OOM killer or a node failure" (WATCHDOG_SIGNAL).
WATCHDOG_SIGNAL = signal.SIGALRM
_WATCHDOG = """import os, select, signal, sys
if not select.select([sys.stdin], [], [], float(sys.argv[2]))[0]:
    sys.stderr.write(sys.argv[3] + "\\n")
    sys.stderr.flush()
    os.kill(int(sys.argv[1]), signal.SIGALRM)
"""


@contextlib.contextmanager
def deadline(world: World, host: str, port: int, timeout: float):
    """Run the framework's rendezvous; if it has not finished after `timeout` seconds, say so in one
    line and end this process."""
    if world.size == 1:
        yield
        return
    fix = "check that every rank started, and that every host resolves and reaches the others' names and ports"
    message = log.error_line(
        f"the {world.size} ranks did not all join within {timeout:g}s (dist.timeout) at {host}:{port}: {fix}"
    )
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), message], stdin=subprocess.PIPE
    )
    began = time.monotonic()
    try:
        yield
    except UserError:
        raise  # already says what happened
    except Exception as exc:  # the framework's own timeout, or an error before it
        waited = time.monotonic() - began
        # A framework's own timeout ends at dist.timeout; an earlier error (NCCL's "invalid usage",
        # a refused connection) is not a wait, and is not told as one.
        what = f"did not all join at {host}:{port} within {timeout:g}s (dist.timeout)"
        if waited < 0.95 * timeout:
            what = f"could not join at {host}:{port} (after {waited:.0f}s)"
        raise WorldError(f"the {world.size} ranks {what}: {describe(exc)}; {fix}") from None
    finally:
        watchdog.stdin.close()
        watchdog.wait()
