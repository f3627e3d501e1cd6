"""A multi-host testbed on one machine: each host a Linux network namespace on a private bridge.

Host i is named node<i> (1-based) and has its own address on a private /24 (the bridge holds .1,
node<i> holds .<i+1>), its own hostname (a UTS namespace) and its own hosts file (bind-mounted in a
private mount namespace: the machine's /etc/hosts is never touched). Ranks on different hosts talk
over real TCP between distinct addresses, by name. Links can be shaped with `tc tbf` (bandwidth only:
this kernel has no netem). The namespaces get no default route, so traffic reaches only the testbed's
own addresses and loopback. The machine reaches the hosts over the bridge, but only root's
processes: an nftables rule rejects whatever another user's process sends onto it (IPv4, or IPv6
link-local), since the trainers run as root and their stores and servers take any connection.

By hand (as root; `mnist-dist testbed` or `python -m launch.testbed`):
    mnist-dist testbed up 2 [--profile 1g]   # prints the testbed's tag
    mnist-dist testbed exec TAG node1 -- hostname -I
    mnist-dist testbed down TAG
    mpirun --host node1:1,node2:1 --mca plm_rsh_agent "mnist-dist testbed rsh TAG" ...   (run on node1)
`mnist-dist sweep --testbed PROFILES` makes one for its points; the test suite's multi-host tests too.

Processes are started on a host with `nsenter --net` plus `unshare --uts --mount` rather than
`ip netns exec`, which remounts /sys and so hides /sys/fs/cgroup from daemons such as slurmd.
Tear-down ends every process in each namespace, then deletes the namespaces, the bridge-side veth
ends (a deleted namespace can linger and keep its veth pair) and the bridge, all by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from launch import signals
from launch.errors import UserError

STATE_DIR = Path("/run/mnist-dist-testbed")
# Network profiles: the rate each host's link is shaped to (bandwidth only; loopback: unshaped veth).
PROFILES = {"loopback": None, "10g": "10gbit", "1g": "1gbit", "100m": "100mbit"}
SUBNETS = [f"10.78.{k}.0/24" for k in range(256)]
# Run the command as the host: its hostname, its hosts file. $1 = name, $2 = hosts file, then the command.
_AS_HOST = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'


def missing_tools() -> str | None:
    """Why this machine cannot make a testbed, or None."""
    if os.geteuid() != 0:
        return "the multi-host testbed needs root (network namespaces, veth, bridges)"
    for tool in ("ip", "unshare", "nsenter", "tc", "nft"):
        if shutil.which(tool) is None:
            return f"the multi-host testbed needs `{tool}` (Debian: iproute2 / util-linux / nftables)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Host:
    name: str  # node1, node2, ...
    address: str
    netns: str
    veth: str  # the bridge-side end; the host's end is eth0 inside its namespace


@dataclass
class Testbed:
    tag: str
    subnet: str
    bridge: str
    bridge_address: str
    hosts: list[Host] = field(default_factory=list)
    folder: str = ""  # hosts file and state

    # --- bring up / down ----------------------------------------------------------------------

    @classmethod
    def up(cls, n: int, rate: str | None = None) -> Testbed:
        """Make `n` hosts. A SIGTERM or SIGHUP meanwhile (a job's end, a closed terminal) still
        removes whatever was made."""
        with _signals_exit():
            return cls._up(n, rate)

    @classmethod
    def _up(cls, n: int, rate: str | None) -> Testbed:
        with _choosing():
            tag = _claim_tag()
            net = ipaddress.ip_network(_free_subnet())
            addrs = list(net.hosts())
            bed = cls(
                tag=tag,
                subnet=str(net),
                bridge=f"mdbr{tag}",
                bridge_address=str(addrs[0]),
                folder=tempfile.mkdtemp(prefix=f"mnist-dist-testbed-{tag}-"),
            )
            os.chmod(bed.folder, 0o755)
            bed.hosts = [_host(tag, i, str(addrs[i])) for i in range(1, n + 1)]
            bed._save()  # before anything exists, so that `down` finds whatever got made
        try:
            _ip("link", "add", bed.bridge, "type", "bridge")
            _ip("addr", "add", f"{bed.bridge_address}/{net.prefixlen}", "dev", bed.bridge)
            _fence(bed.bridge)
            _ip("link", "set", bed.bridge, "up")
            lines = ["127.0.0.1 localhost", f"{bed.bridge_address} testbed-gateway"]
            lines += [f"{h.address} {h.name}" for h in bed.hosts]
            # and each address as IPv4-mapped IPv6, which glibc's hosts file matches only as written:
            # c10d reverse-resolves its peers' sockets by that form, and without these lines every
            # rank warns "The hostname of the client socket cannot be retrieved. err=-3"
            lines += [f"::ffff:{line}" for line in lines]
            for h in bed.hosts:
                Path(bed.hosts_file(h.name)).write_text("\n".join(lines) + "\n")
            for h in bed.hosts:
                _ip("netns", "add", h.netns)
                _ip("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
                _ip("link", "set", h.veth, "master", bed.bridge, "up")
                for args in (
                    ("addr", "add", f"{h.address}/{net.prefixlen}", "dev", "eth0"),
                    ("link", "set", "eth0", "up"),
                    ("link", "set", "lo", "up"),
                ):
                    _ip("-n", h.netns, *args)
            if rate:
                bed.shape(rate)
        except BaseException:
            bed.down()
            raise
        return bed

    def __enter__(self) -> Testbed:
        self._signals = _signals_exit()  # the block ends as on SystemExit, so the testbed still comes down
        self._signals.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._signals.__exit__(None, None, None)
        self.down()

    def shape(self, rate: str | None, only: tuple[str, ...] = ()) -> None:
        """Limit every host's link (or only those hosts') to `rate` (e.g. 1gbit) in both directions;
        None removes the limit."""
        for h in (h for h in self.hosts if not only or h.name in only):
            for ns, dev in ((None, h.veth), (h.netns, "eth0")):
                prefix = ["ip", "netns", "exec", ns] if ns else []
                subprocess.run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=30)
                if rate:
                    tbf = ["tbf", "rate", rate, "burst", _burst(rate), "latency", "50ms"]
                    add = [*prefix, "tc", "qdisc", "add", "dev", dev, "root", *tbf]
                    subprocess.run(add, check=True, capture_output=True, timeout=30)

    def down(self) -> None:
        """End every process on every host, delete namespaces, links and the bridge; never raises."""
        for h in self.hosts:
            self.kill_host(h.name)
            _ip("netns", "del", h.netns, check=False)
            _ip("link", "del", h.veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        subprocess.run(["nft", "delete", "table", "inet", self.bridge], capture_output=True, timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.state_file.unlink()

    # --- processes on hosts -------------------------------------------------------------------

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in testbed {self.tag}: it has {', '.join(h.name for h in self.hosts)}")

    def command(self, name: str, cmd: list[str]) -> list[str]:
        """`cmd` as it runs on host `name`: in its network namespace, with its hostname and hosts file."""
        h = self.host(name)
        return [
            "nsenter",
            f"--net=/run/netns/{h.netns}",
            "unshare",
            "--uts",
            "--mount",
            "--",
            "sh",
            "-c",
            _AS_HOST,
            "sh",
            h.name,
            self.hosts_file(name),
            *cmd,
        ]

    def popen(self, name: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(name, cmd), **kwargs)

    def run(self, name: str, cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(name, cmd), timeout=timeout, **kwargs)

    def pids(self, name: str) -> list[int]:
        out = _ip("netns", "pids", self.host(name).netns, check=False).stdout
        return [int(p) for p in out.split()]

    def kill_host(self, name: str, sig: int = signal.SIGKILL, wait: float = 10) -> None:
        """Send `sig` to every process on the host; with SIGKILL, wait until they are gone."""
        deadline = time.monotonic() + wait
        while True:
            pids = self.pids(name)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if sig != signal.SIGKILL or not pids or time.monotonic() > deadline:
                return
            time.sleep(0.1)  # a killed process leaves the namespace when it is reaped

    def link(self, name: str, up: bool) -> None:
        """Take a host's link down (a partition) or bring it back, from inside the host."""
        _ip("-n", self.host(name).netns, "link", "set", "eth0", "up" if up else "down")

    def link_gbit(self, src: str = "node1", dst: str = "node2", megabytes: int = 400) -> float:
        """TCP throughput from host `src` to host `dst`, as their (shaped) links carry it: Gbit/s."""
        receiver = self.popen(dst, [sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
        try:
            if receiver.stdout.readline().strip() != "ready":
                raise RuntimeError(f"testbed: the TCP receiver on {dst} did not start")
            self.run(src, [sys.executable, "-c", _SENDER, dst, str(megabytes)], timeout=120, check=True)
            return float(receiver.communicate(timeout=60)[0])
        finally:
            receiver.kill()
            receiver.wait()

    # --- state, for `down` from another process -----------------------------------------------

    def hosts_file(self, name: str) -> str:
        """The host's own /etc/hosts: the same names everywhere unless a test gives one host its own."""
        return os.path.join(self.folder, f"hosts-{name}")

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.tag}.json"

    def _save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(self)))


def _burst(rate: str) -> str:
    """tbf's bucket: it passes at most one bucket per timer tick, so at 10gbit 256kb would cap the link
    near 2gbit; but a bucket larger than a step's traffic lets it through at full speed: at 100mbit a
    256kb bucket passed the CNN's 139 kB gradient unshaped, every step."""
    if rate.startswith("10g"):
        return "4mb"
    return "32kb" if rate.endswith("mbit") else "256kb"


def load(tag: str) -> Testbed:
    """The testbed whose state `up` saved; refused unless every name in it is the one `up` gives
    a testbed of this tag: `down` removes what the file names."""
    if not TAG.fullmatch(tag):
        raise UserError(f"{tag!r} is not a testbed tag (`testbed up` prints one): `ls {STATE_DIR}` lists them")
    path = STATE_DIR / f"{tag}.json"
    try:
        raw = json.loads(path.read_text())
        raw["hosts"] = [Host(**h) for h in raw["hosts"]]
        bed = Testbed(**raw)
    except FileNotFoundError:
        raise UserError(f"no testbed {tag!r}: `ls {STATE_DIR}` lists the testbeds that are up") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path} is not a testbed's state ({exc}): not removing anything; delete it") from None
    if bed != _named(tag, bed):
        raise UserError(f"{path} names things testbed {tag} does not make: not removing anything; delete it")
    return bed


_RECEIVER = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 29999)); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); n = 0; t0 = None
while chunk := c.recv(1 << 20):
    t0 = t0 or time.perf_counter(); n += len(chunk)
print(n * 8 / (time.perf_counter() - t0) / 1e9)
"""
_SENDER = """
import socket, sys
c = socket.create_connection((sys.argv[1], 29999)); block = bytes(1 << 20)
for _ in range(int(sys.argv[2])): c.sendall(block)
c.close()
"""


TAG = re.compile(r"[0-9a-f]{4,8}")


def _claim_tag() -> str:
    """A tag no other testbed has: its state file is created exclusively, and no bridge of that
    name is left from one whose state file is gone."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    links = _ip("-o", "link", "show").stdout
    for _ in range(100):
        tag = secrets.token_hex(3)
        if f"mdbr{tag}" in links:
            continue
        with contextlib.suppress(FileExistsError):
            os.close(os.open(STATE_DIR / f"{tag}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return tag
    raise RuntimeError("testbed: no free tag")


def _named(tag: str, bed: Testbed) -> Testbed:
    """`bed` with every name as `up` gives it for `tag` (addresses and subnet as they are)."""
    folder_prefix = os.path.join(tempfile.gettempdir(), f"mnist-dist-testbed-{tag}-")
    hosts = [_host(tag, i, h.address) for i, h in enumerate(bed.hosts, 1)]
    folder = bed.folder if bed.folder.startswith(folder_prefix) and "/" not in bed.folder[len(folder_prefix) :] else ""
    return Testbed(tag, bed.subnet, f"mdbr{tag}", bed.bridge_address, hosts, folder)


def _host(tag: str, i: int, address: str) -> Host:
    """Host i of testbed `tag`, with the names every testbed gives its hosts."""
    return Host(f"node{i}", address, f"mnistdist-{tag}-node{i}", f"md{tag}h{i}")


def _fence(bridge: str) -> None:
    """Only root's processes here may send onto the bridge (a table named as the bridge)."""
    rules = f"""table inet {bridge} {{
  chain out {{
    type filter hook output priority 0; policy accept;
    oifname "{bridge}" meta skuid != 0 meta l4proto tcp reject with tcp reset
    oifname "{bridge}" meta skuid != 0 reject
  }}
}}
"""
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True, timeout=30)


def _signals_exit():
    """SIGTERM and SIGHUP raise SystemExit, as an error would, so that clean-up code runs."""
    return signals.handling((signal.SIGTERM, signal.SIGHUP), lambda signum, _: sys.exit(128 + signum))


@contextlib.contextmanager
def _choosing():
    """One `up` at a time picks its tag and subnet and saves them: a second one in between would
    see the subnet as free until the first one's bridge has its address."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".choosing", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_subnet() -> str:
    """A subnet no interface here uses and no saved testbed has chosen."""
    used = _ip("-o", "-4", "addr", "show").stdout
    chosen = set()
    for state in STATE_DIR.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            chosen.add(json.loads(state.read_text()).get("subnet"))
    for subnet in SUBNETS:
        prefix = subnet.rsplit(".", 1)[0] + "."  # "10.78.3."
        if prefix not in used and subnet not in chosen:
            return subnet
    raise RuntimeError("testbed: no free 10.78.x.0/24 subnet")
