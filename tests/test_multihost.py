"""Ranks on different hosts: every launcher and both frameworks across two testbed hosts (node1 and
node2: network namespaces with their own address, hostname and hosts file; launch/testbed/hosts.py).

Each training reads back summary.json (world size, node count) and the TensorBoard tags. The
`testbed` fixture ends every process on both hosts after each test, also after a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sample_log
from helpers import ONE_THREAD, ROOT, cpu_share, in_group, read_json, read_scalars

pytestmark = [
    pytest.mark.multihost,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
    ),
]
MLP = str(ROOT / "configs/mlp.yaml")
FASHION = ["data.dataset=fashion-mnist", "train.epochs=1", "train.threads=1", "log.progress=never"]
TAGS = {
    "throughput/images_per_sec",
    "throughput/images_per_sec_per_worker",
    "time/step_ms",
    "train/loss",
    "train/accuracy",
    "eval/loss",
    "eval/accuracy",
}
HOSTS = ("node1", "node2")


def mnist_dist(*args: str) -> list[str]:
    return [sys.executable, "-m", "launch", "run", "--config", MLP, *args]


def start(bed, host: str, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return bed.popen(
        host,
        cmd,
        cwd=log.parent,
        env={**os.environ, **ONE_THREAD, **(env or {})},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def on_hosts(
    bed, tmp_path: Path, cmds: dict[str, list[str]], timeout: float = 300, env: dict | None = None
) -> dict[str, tuple[int, str]]:
    """Run one command on each host, together; (exit code, output) per host. A hang fails the test."""
    logs = {host: tmp_path / f"{host}.log" for host in cmds}
    procs = {host: start(bed, host, cmd, logs[host], env) for host, cmd in cmds.items()}
    deadline = time.monotonic() + timeout
    try:
        for proc in procs.values():
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung past {timeout}s: " + " | ".join(f"{h}: {logs[h].read_text()[-1500:]}" for h in cmds))
    return {host: (proc.returncode, logs[host].read_text()) for host, proc in procs.items()}


def assert_ok(results: dict[str, tuple[int, str]]) -> None:
    for host, (code, out) in results.items():
        assert code == 0, f"{host} exited {code}:\n{out[-4000:]}"
        assert "client socket cannot be retrieved" not in out, f"{host}: c10d could not reverse-resolve a peer"


def assert_trained(run_dir: Path, framework: str, world_size: int, nodes: int = 2, accuracy: float = 0.8) -> dict:
    summary = read_json(run_dir / "summary.json")
    assert (summary["framework"], summary["world_size"], summary["num_nodes"]) == (framework, world_size, nodes)
    assert summary["final_eval_accuracy"] >= accuracy
    assert set(read_scalars(run_dir)) >= TAGS
    return summary


def test_the_testbed_gives_each_host_its_own_name_address_and_shaped_link(testbed):
    for host in HOSTS:
        out = testbed.run(host, ["sh", "-c", "hostname; getent hosts node1 node2; ip -o -4 addr show dev eth0"]).stdout
        name, *rest = out.splitlines()
        assert name == host and f"{testbed.host(host).address}/" in rest[-1]
        # (getent shows the IPv4-mapped form the hosts files also list, for c10d's reverse lookups)
        assert [line.split()[0].removeprefix("::ffff:") for line in rest[:2]] == [
            testbed.host(h).address for h in HOSTS
        ]
        assert "node1" in testbed.run(host, ["getent", "hosts", f"::ffff:{testbed.host('node1').address}"]).stdout
    testbed.shape("1gbit")
    for host in HOSTS:  # both directions of the link: the bridge's end and the host's end
        assert (
            "rate 1Gbit"
            in subprocess.run(
                ["tc", "qdisc", "show", "dev", testbed.host(host).veth], capture_output=True, text=True
            ).stdout
        )
        assert "rate 1Gbit" in testbed.run(host, ["tc", "qdisc", "show", "dev", "eth0"]).stdout
    testbed.shape(None)
    assert "tbf" not in testbed.run("node1", ["tc", "qdisc", "show", "dev", "eth0"]).stdout


# A trainer's store as torch makes it: on every address of its host, taking any connection
_STORE = """import sys, torch.distributed as d
s = d.TCPStore("0.0.0.0", 29400, is_master=True, wait_for_workers=False)
print("ready", flush=True)
sys.stdin.read()
"""
_CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 29400), timeout=10); print('connected')"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_no_other_user_of_the_machine_reaches_a_testbed_host(testbed):
    """The trainers run as root: the machine's other users (`nobody` here) cannot connect to a
    store on a testbed host, over IPv4 or IPv6 link-local; root, who runs the testbed, can."""
    store = testbed.popen(
        "node1", [sys.executable, "-c", _STORE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert store.stdout.readline().strip() == "ready"
        addresses = [testbed.host("node1").address]
        if Path("/proc/net/if_inet6").exists():  # where the machine has IPv6
            addresses.append(f"{_link_local(testbed)}%{testbed.bridge}")
        for address in addresses:
            as_root = subprocess.run(
                ["/usr/bin/python3", "-c", _CONNECT, address], capture_output=True, text=True, timeout=60
            )
            assert as_root.stdout.strip() == "connected", (address, as_root.stderr)
            other = subprocess.run(
                [*NOBODY, "/usr/bin/python3", "-c", _CONNECT, address], capture_output=True, text=True, timeout=60
            )
            assert other.returncode != 0 and "ConnectionRefusedError" in other.stderr, (
                address,
                other.stdout,
                other.stderr,
            )
    finally:
        store.kill()
        store.wait()


def _link_local(bed) -> str:
    """node1's IPv6 link-local address, once it and the bridge's own are usable: duplicate address
    detection keeps a new address tentative (unusable as a source) for about a second."""
    from slurm_cluster import _wait_for

    def settled(out: str) -> str | None:
        found = re.search(r"inet6 (fe80::[0-9a-f:]+)/\d+ scope link", out)
        return found[1] if found and "tentative" not in out else None

    show = ["-6", "-o", "addr", "show", "scope", "link", "dev"]
    _wait_for(lambda: settled(_ip(*show, bed.bridge)), 30, "the bridge's link-local address")
    return _wait_for(lambda: settled(bed.run("node1", ["ip", *show, "eth0"]).stdout), 30, "node1's link-local address")


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


# --- every launcher, both frameworks, 2 hosts x 1 and x 2 workers --------------------------------


@pytest.mark.parametrize("nproc", [1, 2])
def test_torchrun_launcher_across_two_hosts(testbed, tmp_path, nproc):
    results = on_hosts(
        testbed,
        tmp_path,
        {
            host: mnist_dist(
                "--framework",
                "torch",
                "--launcher",
                "torchrun",
                "--nodes",
                "2",
                "--node-rank",
                str(k),
                "--master-addr",
                "node1",
                "--nproc",
                str(nproc),
                *FASHION,
                f"log.dir={tmp_path / host}",
                "log.run_name=r",
            )
            for k, host in enumerate(HOSTS)
        },
    )
    assert_ok(results)
    assert_trained(tmp_path / "node1" / "r", "torch", 2 * nproc)
    assert not (tmp_path / "node2" / "r").exists()  # only the chief writes the run directory
    # the static rendezvous honours --node-rank (c10d ignored it: "node_rank is only used for static")
    assert not [host for host, (_, out) in results.items() if "node_rank is only used" in out]
    assert "port 29500 and the ranks' must be reachable only inside the cluster" in results["node1"][1]


def test_plain_torchrun_across_two_hosts(testbed, tmp_path):
    """torchrun as docs/several-nodes.md shows it: the static rendezvous on node1, each host at its node rank."""

    def cmd(node_rank: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc-per-node=1",
            "--rdzv-backend=static",
            "--master-addr=node1",
            "--master-port=29400",
            f"--node-rank={node_rank}",
            "-m",
            "torch_dist.train",
            "--config",
            MLP,
            *FASHION,
            f"log.dir={tmp_path}",
            "log.run_name=r",
        ]

    assert_ok(on_hosts(testbed, tmp_path, {host: cmd(k) for k, host in enumerate(HOSTS)}))
    assert_trained(tmp_path / "r", "torch", 2)


@pytest.mark.parametrize("framework,nproc", [("torch", 1), ("tf", 1), ("torch", 2), ("tf", 2)])
def test_local_launcher_across_two_hosts(testbed, tmp_path, framework, nproc):
    results = on_hosts(
        testbed,
        tmp_path,
        {
            host: mnist_dist(
                "--framework",
                framework,
                "--hosts",
                "node1,node2",
                "--node-rank",
                str(k),
                "--nproc",
                str(nproc),
                *FASHION,
                f"log.dir={tmp_path}",
                "log.run_name=r",
            )
            for k, host in enumerate(HOSTS)
        },
    )
    assert_ok(results)
    assert_trained(tmp_path / "r", framework, 2 * nproc)
    # the worker lines name node2's ranks as the other ranks of the job
    assert f"{2 * nproc} worker(s)" in results["node1"][1]
    # every rank leaves together: TensorFlow's coordination service sees no task vanish after "done"
    for _, out in results.values():
        assert "CoordinationServiceError" not in out and "tasks have crashed" not in out
    assert "holds the others back" not in results["node1"][1]  # hosts alike: no straggler named
    ranks = read_json(tmp_path / "r" / "summary.json")["ranks"]
    assert [(r["host"], r["interface"]) for r in ranks] == [(h, "eth0") for h in HOSTS for _ in range(nproc)]


def test_tf_across_hosts_without_their_names_is_refused_before_starting(testbed, tmp_path):
    code, out = on_hosts(
        testbed,
        tmp_path,
        {
            "node2": mnist_dist(
                "--framework",
                "tf",
                "--nodes",
                "2",
                "--node-rank",
                "1",
                "--master-addr",
                "node1",
                *FASHION,
                f"log.dir={tmp_path}",
            )
        },
        timeout=60,
    )["node2"]
    assert code != 0 and "pass --hosts node1,node2" in out
    assert "tf_dist.train" not in out  # nothing started


def mpirun_env(bed) -> dict[str, str]:
    """OpenMPI's own MCA variables: start node2's daemon through the testbed, talk over its subnet."""
    return {
        "OMPI_MCA_plm_rsh_agent": f"{sys.executable} -m launch.testbed rsh {bed.tag}",
        "OMPI_MCA_oob_tcp_if_include": bed.subnet,
        "OMPI_MCA_btl_tcp_if_include": bed.subnet,
    }


@pytest.mark.parametrize(
    "framework,nproc,extra", [("torch", 1, []), ("tf", 1, []), ("torch", 2, []), ("torch", 1, ["dist.backend=horovod"])]
)
def test_mpirun_across_two_hosts(testbed, tmp_path, framework, nproc, extra):
    if extra:
        pytest.importorskip("horovod.torch", reason="Horovod is not installed: `make horovod` builds it")
    code, out = on_hosts(
        testbed,
        tmp_path,
        {
            "node1": mnist_dist(
                "--framework",
                framework,
                "--launcher",
                "mpirun",
                "--hosts",
                "node1,node2",
                "--nproc",
                str(nproc),
                *FASHION,
                *extra,
                f"log.dir={tmp_path}",
                "log.run_name=r",
            )
        },
        env=mpirun_env(testbed),
    )["node1"]
    assert code == 0, out[-4000:]
    # num_nodes 2: OpenMPI itself told each rank it is alone on its host (OMPI_COMM_WORLD_LOCAL_SIZE)
    summary = assert_trained(tmp_path / "r", framework, 2 * nproc)
    if extra:
        assert summary["backend"] == "horovod"


# --- TensorFlow's own convention ----------------------------------------------------------------


def test_tf_config_set_by_hand_on_two_hosts_makes_one_cluster(testbed, tmp_path):
    """Each host sets TF_CONFIG as TensorFlow's guide shows and starts the trainer with no launcher:
    one cluster of two, not two worlds of one."""
    cluster = {"worker": ["node1:23456", "node2:23456"]}
    procs, logs = {}, {}
    for k, host in enumerate(HOSTS):
        logs[host] = tmp_path / f"{host}.log"
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": k}})}
        procs[host] = start(
            testbed,
            host,
            [
                sys.executable,
                "-m",
                "tf_dist.train",
                "--config",
                MLP,
                *FASHION,
                f"log.dir={tmp_path / host}",
                "log.run_name=r",
            ],
            logs[host],
            env,
        )
    for host, proc in procs.items():
        assert proc.wait(timeout=300) == 0, logs[host].read_text()[-3000:]
    summary = assert_trained(tmp_path / "node1" / "r", "tf", 2)
    assert "via tf_config" in logs["node1"].read_text() and summary["num_nodes"] == 2
    assert not (tmp_path / "node2" / "r" / "summary.json").exists()


def test_rank_and_world_size_alone_on_two_hosts_find_their_hosts(testbed, tmp_path):
    """Kubeflow's PyTorchJob way: one process per host with only RANK, WORLD_SIZE and MASTER_*. The
    ranks learn from each other that they are on two hosts, not local ranks 0 and 1 of one."""
    master = {"WORLD_SIZE": "2", "MASTER_ADDR": "node1", "MASTER_PORT": "23456"}
    cmd = [sys.executable, "-m", "torch_dist.train", "--config", MLP, *FASHION, f"log.dir={tmp_path}", "log.run_name=r"]
    logs = {host: tmp_path / f"{host}.log" for host in HOSTS}
    procs = {host: start(testbed, host, cmd, logs[host], {**master, "RANK": str(k)}) for k, host in enumerate(HOSTS)}
    for host, proc in procs.items():
        assert proc.wait(timeout=300) == 0, logs[host].read_text()[-3000:]
    assert_trained(tmp_path / "r", "torch", 2, nodes=2)
    assert "2 host(s) by the ranks' own names (node1, node2)" in logs["node1"].read_text()


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_a_host_slowed_by_a_cpu_cgroup_is_named_as_the_straggler(testbed, tmp_path, framework):
    """node2's processes get a quarter of one CPU: node1's rank waits for it in every collective,
    and rank 0 names rank 1 on node2, with its numbers, once."""
    cmds = {
        host: mnist_dist(
            *("--framework", framework, "--hosts", "node1,node2", "--node-rank", str(k)),
            # batches of 4096: a step's compute outweighs its all-reduce (TF's costs CPU too, and so
            # is throttled on node2 as well) and spans several of the cgroup's 10 ms periods, so
            # that throttling slows every step alike instead of the steps that happen to straddle one
            *("data.dataset=synthetic", "data.limit=122880", "train.batch_size=4096", "train.epochs=1"),
            *("train.threads=1", "log.interval=2", "log.progress=never", f"log.dir={tmp_path}", "log.run_name=r"),
        )
        for k, host in enumerate(HOSTS)
    }
    with cpu_share(0.25) as group:
        results = on_hosts(testbed, tmp_path, {**cmds, "node2": in_group(group, cmds["node2"])})
    assert_ok(results)
    named = [line for line in results["node1"][1].splitlines() if "holds the others back" in line]
    assert len(named) == 1 and "rank 1 on node2 holds the others back" in named[0], results["node1"][1][-3000:]
    slow, fast = read_json(tmp_path / "r" / "summary.json")["ranks"][::-1]
    # (node2's own share of the all-reduce is throttled too: who spends longer in it is no rule)
    assert slow["host"] == "node2" and slow["compute_ms"] > 1.5 * fast["compute_ms"]
    per_rank = [read_scalars(tmp_path / "r" / "ranks" / f"rank{r}")["rank/compute_ms"] for r in (0, 1)]
    assert [step for step, _ in per_rank[0]] == [step for step, _ in per_rank[1]]  # one chart, overlaid


# --- equivalence ------------------------------------------------------------------------------


@pytest.mark.parametrize("framework,tolerance", [("torch", 1e-5), ("tf", 1e-4)])
def test_two_hosts_by_one_equal_one_host_by_two(testbed, tmp_path, framework, tolerance):
    """The same global batch, data and seed: 2 hosts x 1 worker ends where 1 host x 2 workers does."""
    args = [*FASHION, "data.limit=12000", "log.run_name=r"]
    assert_ok(
        on_hosts(
            testbed,
            tmp_path,
            {
                host: mnist_dist(
                    "--framework",
                    framework,
                    "--hosts",
                    "node1,node2",
                    "--node-rank",
                    str(k),
                    *args,
                    f"log.dir={tmp_path / 'two'}",
                )
                for k, host in enumerate(HOSTS)
            },
        )
    )
    assert_ok(
        on_hosts(
            testbed,
            tmp_path,
            {"node1": mnist_dist("--framework", framework, "--nproc", "2", *args, f"log.dir={tmp_path / 'one'}")},
        )
    )
    two, one = (read_json(tmp_path / d / "r" / "summary.json") for d in ("two", "one"))
    assert (two["num_nodes"], one["num_nodes"], two["steps"]) == (2, 1, one["steps"])
    assert abs(two["final_eval_loss"] - one["final_eval_loss"]) <= tolerance, (
        two["final_eval_loss"],
        one["final_eval_loss"],
    )


# --- no silent worlds of one ------------------------------------------------------------------


def one_line_errors(out: str, prog: str) -> list[str]:
    """The trainer's error lines, without the local launcher's "[rank r] " prefix."""
    lines = (re.sub(r"^\[rank \d+\] ", "", line) for line in out.splitlines())
    return [line for line in lines if line.startswith(f"{prog}: error: ")]


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_a_master_name_node2_cannot_resolve_fails_every_rank_in_time(testbed, tmp_path, framework):
    """node2 is given a master name only node1 knows: node2 fails at once, node1 within dist.timeout,
    each with one line naming its rank, host and the address it tried."""
    timeout = 10
    prog = f"{framework}_dist.train"
    common = [
        "--framework",
        framework,
        "--nodes",
        "2",
        "--master-port",
        "29433",
        *FASHION,
        f"log.dir={tmp_path}",
        f"dist.timeout={timeout}",
    ]
    hosts = {
        "node1": ["--hosts", "node1,node2", "--node-rank", "0"],
        "node2": ["--hosts", "master-only-node1-knows,node2", "--node-rank", "1"],
    }
    began = time.monotonic()
    results = on_hosts(testbed, tmp_path, {h: mnist_dist(*common, *a) for h, a in hosts.items()}, timeout=120)
    took = time.monotonic() - began
    assert took < timeout + 30, f"took {took:.0f}s"
    (code1, out1), (code2, out2) = results["node1"], results["node2"]
    assert code1 != 0 and code2 != 0
    [line2] = one_line_errors(out2, prog)
    assert "rank 1 on node2" in line2 and "cannot resolve the master's name 'master-only-node1-knows'" in line2
    [line1] = one_line_errors(out1, prog)
    assert "rank 0 on node1" in line1 and f"within {timeout}s" in line1
    assert re.search(r"node1:2943[34]\b", line1)  # torch's store port, or TensorFlow's chief port
    assert "Traceback" not in out1 + out2
    # the launcher says what ended rank 0: its own watchdog, not the OOM killer's SIGKILL
    assert "rank 0 (pid" in out1 and "was ended by its rendezvous deadline" in out1 and "SIGKILL" not in out1


def test_a_master_port_nobody_serves_fails_in_time(testbed, tmp_path):
    code, out = on_hosts(
        testbed,
        tmp_path,
        {
            "node2": mnist_dist(
                "--framework",
                "torch",
                "--nodes",
                "2",
                "--node-rank",
                "1",
                "--master-addr",
                "node1",
                "--master-port",
                "29435",
                *FASHION,
                f"log.dir={tmp_path}",
                "dist.timeout=10",
            )
        },
        timeout=60,
    )["node2"]
    assert code != 0
    [line] = one_line_errors(out, "torch_dist.train")
    assert "rank 1 on node2: cannot reach the master at node1:29435" in line and "within 10s" in line


# --- a multi-homed host ------------------------------------------------------------------------


def add_unreachable_interface(bed, name: str) -> str:
    """A second interface on the host, on a subnet no other host reaches (a veth pair whose ends
    both stay inside it); its address is returned. Makes a multi-homed host."""
    ns = bed.host(name).netns
    address = f"10.79.0.{10 + bed.hosts.index(bed.host(name))}"  # distinct per host, outside the testbed's 10.78.x
    for args in (
        ("link", "add", "side0", "type", "veth", "peer", "name", "side1"),
        ("addr", "add", f"{address}/24", "dev", "side0"),
        ("link", "set", "side0", "up"),
        ("link", "set", "side1", "up"),
    ):
        subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=30)
    return address


def remove_interface(bed, name: str) -> None:
    subprocess.run(["ip", "-n", bed.host(name).netns, "link", "del", "side0"], capture_output=True, timeout=30)


def test_multi_homed_hosts_talk_on_the_interface_that_reaches_the_master(testbed, tmp_path):
    """Each host gets a second interface that no other host reaches, and its own name resolves to
    it there, as on hosts whose names point at a management network. The job names the master by
    its cluster address. gloo would listen on each name's address, which the peer cannot reach;
    torch_dist sets GLOO_SOCKET_IFNAME to the interface that reaches the master instead. A
    GLOO_SOCKET_IFNAME the user set is honoured: forced onto those interfaces, the job fails."""
    originals = {}
    for host in HOSTS:
        side = add_unreachable_interface(testbed, host)
        hosts = Path(testbed.hosts_file(host))
        originals[host] = hosts.read_text()
        hosts.write_text(f"{side} {host}\n{originals[host]}")
    master = testbed.host("node1").address
    try:

        def job(rank: int, name: str) -> list[str]:
            return mnist_dist(
                "--framework",
                "torch",
                "--hosts",
                f"{master},node2",
                "--node-rank",
                str(rank),
                *FASHION,
                "data.limit=12000",
                "dist.timeout=10",
                f"log.dir={tmp_path}",
                f"log.run_name={name}",
            )

        assert_ok(on_hosts(testbed, tmp_path, {host: job(k, "r") for k, host in enumerate(HOSTS)}))
        assert_trained(tmp_path / "r", "torch", 2, accuracy=0.7)
        forced = on_hosts(
            testbed,
            tmp_path,
            {host: ["env", "GLOO_SOCKET_IFNAME=side0", *job(k, "forced")] for k, host in enumerate(HOSTS)},
            timeout=120,
        )
        assert forced["node1"][0] != 0 and forced["node2"][0] != 0, forced["node1"][1][-2000:]
        assert not (tmp_path / "forced" / "summary.json").exists()
    finally:
        for host in HOSTS:
            Path(testbed.hosts_file(host)).write_text(originals.get(host, ""))
            remove_interface(testbed, host)


# --- Slurm: two slurmd, one per host ----------------------------------------------------------


# `--mpi-launcher srun` (srun --mpi=pmix) is not among them: Slurm's PMIx plugin makes a per-step folder
# under /tmp on every node, and the testbed's hosts share one /tmp, so the second node's step fails
# with "Cannot create directory /tmp/spmix_appdir_...: File exists". Real nodes have their own /tmp.
@pytest.mark.parametrize(
    "framework,extra", [("torch", []), ("tf", []), ("torch", ["--template", "mpi"]), ("tf", ["--template", "mpi"])]
)
def test_slurm_job_across_two_nodes(slurm_two_nodes, tmp_path, framework, extra):
    from test_slurm import job_of, run_dir_of, submit

    out = submit(
        slurm_two_nodes, tmp_path, "--framework", framework, "--nodes", "2", "--nproc", "1", "--wait", *extra, *FASHION
    )
    job = job_of(out)
    info = slurm_two_nodes.job(job)
    assert out.returncode == 0, Path(info["StdOut"]).read_text()[-4000:]
    assert info["NodeList"] == "node[1-2]" and info["JobState"] == "COMPLETED"
    assert_trained(run_dir_of(out), framework, 2)


def test_slurm_preemption_across_two_nodes_resumes_exactly(slurm_two_nodes, tmp_path):
    from test_slurm import job_of, run_dir_of, submit

    from slurm_cluster import _wait_for

    out = submit(
        slurm_two_nodes,
        tmp_path,
        "--framework",
        "torch",
        "--nodes",
        "2",
        "--nproc",
        "1",
        "data.dataset=synthetic",
        "train.epochs=3",
        "train.threads=1",
    )
    assert out.returncode == 0, out.stderr
    job, run_dir = job_of(out), run_dir_of(out)
    _wait_for(lambda: list(run_dir.glob("events.out.tfevents.*")), 300, "the job to start training", 0.2)
    slurm_two_nodes.run("scancel", "--signal=USR1", "--batch", job)
    _wait_for(lambda: slurm_two_nodes.job(job).get("Restarts", "0") != "0", 120, "the job to requeue itself", 0.2)
    final = _wait_for(
        lambda: (lambda i: i if i["JobState"] in ("COMPLETED", "FAILED", "CANCELLED") else None)(
            slurm_two_nodes.job(job)
        ),
        600,
        "the requeued job to finish",
        0.5,
    )
    log = Path(final["StdOut"]).read_text()
    assert final["JobState"] == "COMPLETED" and final["NodeList"] == "node[1-2]", log[-3000:]
    assert "stop requested: checkpointed step" in log and "resuming from" in log
    summary = read_json(run_dir / "summary.json")
    assert (summary["steps"], summary["restarts"], summary["num_nodes"]) == (3 * 235, 1, 2)
    assert [s for s, _ in read_scalars(run_dir)["eval/accuracy"]] == [235 * k for k in range(1, 4)]


def test_slurm_requeue_onto_fewer_nodes_resumes_at_the_new_size(slurm_two_nodes, tmp_path):
    """An elastic job (--nodes 1:2, sbatch --nodes=1-2) starts on both nodes; node2 is drained and the
    job preempted: its requeue gets node1 only, and resumes there with one worker, sample-exact."""
    from test_slurm import job_of, run_dir_of, submit

    from helpers import check_every_sample_once
    from slurm_cluster import _wait_for

    cluster, samples = slurm_two_nodes, tmp_path / "samples"
    out = submit(
        cluster,
        tmp_path,
        "--framework",
        "torch",
        "--nodes",
        "1:2",
        "--nproc",
        "1",
        "data.dataset=synthetic",
        "data.limit=12000",
        "train.epochs=3",
        "train.threads=1",
        env=sample_log.env(samples),
    )
    assert out.returncode == 0, out.stderr
    job, run_dir = job_of(out), run_dir_of(out)
    _wait_for(lambda: list(run_dir.glob("checkpoints/*.pt")), 300, "the first epoch's checkpoint", 0.2)
    assert cluster.job(job)["NodeList"] == "node[1-2]"
    cluster.run("scontrol", "update", "NodeName=node2", "State=DRAIN", "Reason=mnist-dist-test")
    try:
        cluster.run("scancel", "--signal=USR1", "--batch", job)
        final = _wait_for(
            lambda: (lambda i: i if i["JobState"] in ("COMPLETED", "FAILED", "CANCELLED") else None)(cluster.job(job)),
            600,
            "the requeued job to finish",
            0.5,
        )
    finally:
        cluster.run("scontrol", "update", "NodeName=node2", "State=RESUME")
    log = Path(final["StdOut"]).read_text()
    assert final["JobState"] == "COMPLETED" and final["NodeList"] == "node1", log[-3000:]
    assert "on 1 worker(s), not 2" in log
    summary = read_json(run_dir / "summary.json")
    history = summary["world_size_history"]
    assert (summary["world_size"], summary["num_nodes"], summary["restarts"], summary["epochs"]) == (1, 1, 1, 3)
    assert [h["world_size"] for h in history] == [2, 1] and history[1]["steps"] == [
        history[0]["steps"][1],
        summary["steps"],
    ]
    check_every_sample_once(samples, summary["steps"], {0: 0, 1: 0, 2: 0}, n=12000)


# --- node-loss drills -------------------------------------------------------------------------

DRILL = ["data.dataset=synthetic", "train.epochs=3", "train.threads=1", "log.progress=never", "log.run_name=r"]


def start_job(
    bed, tmp_path: Path, framework: str, name: str, *extra: str, options: tuple[str, ...] = (), env: dict | None = None
) -> dict[str, subprocess.Popen]:
    return {
        host: start(
            bed,
            host,
            mnist_dist(
                "--framework",
                framework,
                "--hosts",
                "node1,node2",
                "--node-rank",
                str(k),
                *options,
                *DRILL,
                f"log.dir={tmp_path}",
                *extra,
            ),
            tmp_path / f"{name}-{host}.log",
            env,
        )
        for k, host in enumerate(HOSTS)
    }


def wait_exit(proc: subprocess.Popen, limit: float, log: Path) -> float:
    """Seconds until `proc` exits; past `limit`, fails the test with the end of its log."""
    began = time.monotonic()
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {limit:.0f}s after the node was lost; {log.name} ends:\n{log.read_text()[-4000:]}")
    return time.monotonic() - began


def resume_and_check(bed, tmp_path: Path, framework: str) -> None:
    """After the loss: the same job with checkpoint.resume=true ends with an uninterrupted run's steps
    (3 epochs of the first epoch's steps, which ran before the loss)."""
    procs = start_job(bed, tmp_path, framework, "resume", "checkpoint.resume=true")
    for host, proc in procs.items():
        assert proc.wait(timeout=300) == 0, (tmp_path / f"resume-{host}.log").read_text()[-3000:]
    assert "resuming from" in (tmp_path / "resume-node1.log").read_text()
    summary, history = (read_json(tmp_path / "r" / name) for name in ("summary.json", "history.json"))
    assert summary["steps"] == 3 * history["epochs"][0]["step"] and summary["epochs"] == 3
    assert [e["step"] for e in history["epochs"]] == [history["epochs"][0]["step"] * k for k in range(1, 4)]


@pytest.mark.drill
@pytest.mark.parametrize(
    "framework,loss", [("torch", "kill"), ("tf", "kill"), ("torch", "partition"), ("tf", "partition")]
)
def test_losing_host2_mid_epoch(testbed, tmp_path, framework, loss):
    """(kill) every process of node2 is SIGKILLed, or (partition) node2's link goes down, once the
    first epoch's checkpoint exists: node1's job ends non-zero in time, says which rank or host it
    lost, and no process is left on either host; the rerun from the checkpoint finishes exactly."""
    timeout = 30  # a cut link is found when a collective waits this long
    procs = start_job(testbed, tmp_path, framework, "lost", f"dist.timeout={timeout}")
    from slurm_cluster import _wait_for

    pattern = "checkpoints/*" if framework == "torch" else "checkpoints/ckpt-*.index"
    _wait_for(
        lambda: list((tmp_path / "r").glob(pattern)) or any(p.poll() is not None for p in procs.values()),
        300,
        "the first checkpoint",
        0.2,
    )
    node1_log = tmp_path / "lost-node1.log"
    assert all(p.poll() is None for p in procs.values()), node1_log.read_text()[-3000:]
    if loss == "kill":
        testbed.kill_host("node2")
        limit = 60
    else:
        testbed.link("node2", up=False)
        limit = timeout + 30
    took = wait_exit(procs["node1"], limit, node1_log)
    out = node1_log.read_text()
    print(f"{framework} {loss}: node1's job exited {procs['node1'].returncode} after {took:.1f}s")
    assert procs["node1"].returncode != 0, out[-3000:]
    assert re.search(r"rank 1|node2|10\.78\.\d+\.3|task:1", out), out[-3000:]  # names what it lost
    if loss == "partition":
        wait_exit(procs["node2"], limit, tmp_path / "lost-node2.log")  # the cut-off side gives up on its own too
        testbed.link("node2", up=True)
    _wait_for(lambda: not testbed.pids("node1") and not testbed.pids("node2"), 30, "no process on either host")
    resume_and_check(testbed, tmp_path, framework)


@pytest.mark.drill
def test_elastic_torchrun_finishes_on_host1_after_host2_is_lost(testbed, tmp_path):
    """`--nodes 1:2 --max-restarts 1`: node2 is killed 10 steps into the second epoch; torchrun on
    node1 restarts its worker from the first epoch's checkpoint, alone, and finishes every epoch.
    The sample log shows what the final model trained on: each epoch's samples once (the 10 steps
    the lost attempt trained past the checkpoint are not in the model; the restart trains them)."""
    from helpers import check_every_sample_once
    from slurm_cluster import _wait_for

    samples = tmp_path / "samples"
    procs = start_job(
        testbed,
        tmp_path,
        "torch",
        "elastic",
        "data.limit=8000",
        "dist.timeout=60",
        options=("--launcher", "torchrun", "--nodes", "1:2", "--max-restarts", "1"),
        env=sample_log.env(samples, hold="1:42"),  # rank 1 stops 10 steps past the checkpoint at step 32
    )

    def held_in_epoch_two() -> bool:
        log = samples / "rank1.jsonl"
        return procs["node1"].poll() is not None or (log.exists() and '"step": 42,' in log.read_text())

    _wait_for(held_in_epoch_two, 300, "rank 1 at step 42", 0.1)
    assert procs["node1"].poll() is None, (tmp_path / "elastic-node1.log").read_text()[-3000:]
    testbed.kill_host("node2")
    assert procs["node1"].wait(timeout=300) == 0, (tmp_path / "elastic-node1.log").read_text()[-4000:]
    log = (tmp_path / "elastic-node1.log").read_text()
    print(log[-6000:])
    summary = read_json(tmp_path / "r" / "summary.json")
    per_epoch = {2: 32, 1: 63}  # 8000 samples at batch 128 on 2 workers and on 1
    steps = per_epoch[2] + 2 * per_epoch[1]
    assert (summary["world_size"], summary["num_nodes"], summary["restarts"], summary["steps"]) == (1, 1, 1, steps)
    assert [(h["world_size"], h["steps"]) for h in summary["world_size_history"]] == [(2, [0, 32]), (1, [32, steps])]
    check_every_sample_once(samples, steps, {0: 0, 1: 0, 2: 0}, n=8000)
    first_attempt = [json.loads(line) for line in (samples / "rank1.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in first_attempt) == 42  # node2 trained into epoch 2 before it was lost


def test_testbed_command_makes_shaped_hosts_and_removes_them(testbeds_removed):
    from launch.testbed.hosts import STATE_DIR

    cli = [sys.executable, "-m", "launch", "testbed"]
    up = subprocess.run([*cli, "up", "2", "--profile", "1g"], capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    tag = up.stdout.strip()
    on_node2 = subprocess.run(
        [*cli, "exec", tag, "node2", "--", "hostname"], capture_output=True, text=True, timeout=60
    )
    assert on_node2.stdout.strip() == "node2"
    qdisc = subprocess.run(
        [*cli, "exec", tag, "node1", "--", "tc", "qdisc", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "tbf" in qdisc and "rate 1Gbit" in qdisc, qdisc
    down = subprocess.run([*cli, "down", tag], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and not (STATE_DIR / f"{tag}.json").exists()
    assert f"mnistdist-{tag}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
