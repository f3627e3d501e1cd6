"""Ranks on different hosts: every launcher and both frameworks across two testbed hosts (node1 and
node2: network namespaces with their own address, hostname and hosts file; tests/testbed.py).

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

from helpers import ONE_THREAD, ROOT, read_json, read_scalars

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(900),
              pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                                 reason="Debian's dataset-fashion-mnist is not installed")]
MLP = str(ROOT / "configs/mlp.yaml")
FASHION = ["data.dataset=fashion-mnist", "train.epochs=1", "train.threads=1", "log.progress=never"]
TAGS = {"throughput/images_per_sec", "throughput/images_per_sec_per_worker", "time/step_ms", "train/loss",
        "train/accuracy", "eval/loss", "eval/accuracy"}
HOSTS = ("node1", "node2")


def mnist_dist(*args: str) -> list[str]:
    return [sys.executable, "-m", "launch", "run", "--config", MLP, *args]


def start(bed, host: str, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return bed.popen(host, cmd, cwd=log.parent, env={**os.environ, **ONE_THREAD, **(env or {})},
                     stdout=log.open("w"), stderr=subprocess.STDOUT)


def on_hosts(bed, tmp_path: Path, cmds: dict[str, list[str]], timeout: float = 300,
             env: dict | None = None) -> dict[str, tuple[int, str]]:
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


def assert_trained(run_dir: Path, framework: str, world_size: int, nodes: int = 2, accuracy: float = 0.8) -> dict:
    summary = read_json(run_dir / "summary.json")
    assert (summary["framework"], summary["world_size"], summary["num_nodes"]) == (framework, world_size, nodes)
    assert summary["final_eval_accuracy"] >= accuracy
    assert TAGS <= set(read_scalars(run_dir))
    return summary


# --- every launcher, both frameworks, 2 hosts x 1 and x 2 workers --------------------------------

@pytest.mark.parametrize("nproc", [1, 2])
def test_torchrun_launcher_across_two_hosts(testbed, tmp_path, nproc):
    results = on_hosts(testbed, tmp_path, {
        host: mnist_dist("--framework", "torch", "--launcher", "torchrun", "--nodes", "2", "--node-rank", str(k),
                         "--master-addr", "node1", "--nproc", str(nproc), *FASHION, f"log.dir={tmp_path / host}",
                         "log.run_name=r")
        for k, host in enumerate(HOSTS)})
    assert_ok(results)
    assert_trained(tmp_path / "node1" / "r", "torch", 2 * nproc)
    assert not (tmp_path / "node2" / "r").exists()  # only the chief writes the run directory


def test_plain_torchrun_across_two_hosts(testbed, tmp_path):
    """torchrun as the README shows it, with c10d rendezvous on node1 and the same command on both."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
           "--rdzv-endpoint=node1:29400", "--rdzv-id=plain", "-m", "torch_dist.train", "--config", MLP, *FASHION,
           f"log.dir={tmp_path}", "log.run_name=r"]
    assert_ok(on_hosts(testbed, tmp_path, {host: cmd for host in HOSTS}))
    assert_trained(tmp_path / "r", "torch", 2)


@pytest.mark.parametrize("framework,nproc", [("torch", 1), ("tf", 1), ("torch", 2), ("tf", 2)])
def test_local_launcher_across_two_hosts(testbed, tmp_path, framework, nproc):
    results = on_hosts(testbed, tmp_path, {
        host: mnist_dist("--framework", framework, "--hosts", "node1,node2", "--node-rank", str(k), "--nproc",
                         str(nproc), *FASHION, f"log.dir={tmp_path}", "log.run_name=r")
        for k, host in enumerate(HOSTS)})
    assert_ok(results)
    assert_trained(tmp_path / "r", framework, 2 * nproc)
    # the worker lines name node2's ranks as the other ranks of the job
    assert f"{2 * nproc} worker(s)" in results["node1"][1]


def test_tf_across_hosts_without_their_names_is_refused_before_starting(testbed, tmp_path):
    code, out = on_hosts(testbed, tmp_path, {"node2": mnist_dist(
        "--framework", "tf", "--nodes", "2", "--node-rank", "1", "--master-addr", "node1", *FASHION,
        f"log.dir={tmp_path}")}, timeout=60)["node2"]
    assert code != 0 and "pass --hosts node1,node2" in out
    assert "tf_dist.train" not in out  # nothing started


def mpirun_env(bed) -> dict[str, str]:
    """OpenMPI's own MCA variables: start node2's daemon through the testbed, talk over its subnet."""
    return {"OMPI_MCA_plm_rsh_agent": f"{sys.executable} {ROOT / 'tests/testbed.py'} rsh {bed.tag}",
            "OMPI_MCA_oob_tcp_if_include": bed.subnet, "OMPI_MCA_btl_tcp_if_include": bed.subnet}


@pytest.mark.parametrize("framework,nproc,extra", [("torch", 1, []), ("tf", 1, []), ("torch", 2, []),
                                                   ("torch", 1, ["dist.backend=horovod"])])
def test_mpirun_across_two_hosts(testbed, tmp_path, framework, nproc, extra):
    if extra:
        pytest.importorskip("horovod.torch", reason="Horovod is not installed: `make horovod` builds it")
    code, out = on_hosts(testbed, tmp_path, {"node1": mnist_dist(
        "--framework", framework, "--launcher", "mpirun", "--hosts", "node1,node2", "--nproc", str(nproc), *FASHION,
        *extra, f"log.dir={tmp_path}", "log.run_name=r")}, env=mpirun_env(testbed))["node1"]
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
        procs[host] = start(testbed, host, [sys.executable, "-m", "tf_dist.train", "--config", MLP, *FASHION,
                                            f"log.dir={tmp_path / host}", "log.run_name=r"], logs[host], env)
    for host, proc in procs.items():
        assert proc.wait(timeout=300) == 0, logs[host].read_text()[-3000:]
    summary = assert_trained(tmp_path / "node1" / "r", "tf", 2)
    assert "via tf_config" in logs["node1"].read_text() and summary["num_nodes"] == 2
    assert not (tmp_path / "node2" / "r" / "summary.json").exists()


# --- equivalence ------------------------------------------------------------------------------

@pytest.mark.parametrize("framework,tolerance", [("torch", 1e-5), ("tf", 1e-4)])
def test_two_hosts_by_one_equal_one_host_by_two(testbed, tmp_path, framework, tolerance):
    """The same global batch, data and seed: 2 hosts x 1 worker ends where 1 host x 2 workers does."""
    args = [*FASHION, "data.limit=12000", "log.run_name=r"]
    assert_ok(on_hosts(testbed, tmp_path, {
        host: mnist_dist("--framework", framework, "--hosts", "node1,node2", "--node-rank", str(k), *args,
                         f"log.dir={tmp_path / 'two'}") for k, host in enumerate(HOSTS)}))
    assert_ok(on_hosts(testbed, tmp_path, {"node1": mnist_dist("--framework", framework, "--nproc", "2", *args,
                                                               f"log.dir={tmp_path / 'one'}")}))
    two, one = (read_json(tmp_path / d / "r" / "summary.json") for d in ("two", "one"))
    assert (two["num_nodes"], one["num_nodes"], two["steps"]) == (2, 1, one["steps"])
    assert abs(two["final_eval_loss"] - one["final_eval_loss"]) <= tolerance, (two["final_eval_loss"],
                                                                                one["final_eval_loss"])


# --- no silent worlds of one ------------------------------------------------------------------

def one_line_errors(out: str, prog: str) -> list[str]:
    """The trainer's error lines, without the local launcher's "[rank r] " prefix."""
    lines = (re.sub(r"^\[rank \d+\] ", "", line) for line in out.splitlines())
    return [line for line in lines if line.startswith(f"{prog}: error: ")]


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_a_master_name_node2_cannot_resolve_fails_every_rank_in_time(testbed, tmp_path, framework):
    """node2 is given a master name only node1 knows: node2 fails at once, node1 within dist.timeout,
    each with one line naming its rank, host and the address it tried."""
    timeout = 20
    prog = f"{framework}_dist.train"
    common = ["--framework", framework, "--nodes", "2", "--master-port", "29433", *FASHION, f"log.dir={tmp_path}",
              f"dist.timeout={timeout}"]
    hosts = {"node1": ["--hosts", "node1,node2", "--node-rank", "0"],
             "node2": ["--hosts", "master-only-node1-knows,node2", "--node-rank", "1"]}
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


def test_a_master_port_nobody_serves_fails_in_time(testbed, tmp_path):
    code, out = on_hosts(testbed, tmp_path, {"node2": mnist_dist(
        "--framework", "torch", "--nodes", "2", "--node-rank", "1", "--master-addr", "node1", "--master-port", "29435",
        *FASHION, f"log.dir={tmp_path}", "dist.timeout=10")}, timeout=60)["node2"]
    assert code != 0
    [line] = one_line_errors(out, "torch_dist.train")
    assert "rank 1 on node2: cannot reach the master at node1:29435" in line and "within 10s" in line
