"""World discovery from every launcher's environment, and their precedence."""

import re
import shutil
import subprocess
import sys

import pytest

from launch.cluster import rendezvous
from launch.cluster.hostlist import expand_hostlist, parse_hostlist, parse_tasks_per_node
from launch.cluster.world import World, detect_world, port_for_job, with_hosts, worker_addresses
from launch.errors import WorldError, describe

from conftest import ROOT


def world(env):
    return detect_world(env, expand=parse_hostlist)


def test_single_process():
    assert world({}) == World()
    assert world({}).is_chief


TORCHRUN = {
    "RANK": "5",
    "WORLD_SIZE": "8",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "4",
    "GROUP_RANK": "1",
    "MASTER_ADDR": "node-a",
    "MASTER_PORT": "29400",
    "TORCHELASTIC_RUN_ID": "abc",
}


def test_torchrun():
    w = world(TORCHRUN)
    assert (w.rank, w.size, w.local_rank, w.local_size, w.node_rank, w.num_nodes) == (5, 8, 1, 4, 1, 2)
    assert (w.master_addr, w.master_port, w.source, w.job_id) == ("node-a", 29400, "torchrun", "abc")


def test_torchrun_default_run_id_is_no_job_id():
    assert world({**TORCHRUN, "TORCHELASTIC_RUN_ID": "none"}).job_id is None


def test_env_rank_without_master_is_an_error():
    with pytest.raises(WorldError, match="MASTER_ADDR is not"):
        world({"RANK": "0", "WORLD_SIZE": "2"})


OMPI = {
    "OMPI_COMM_WORLD_RANK": "3",
    "OMPI_COMM_WORLD_SIZE": "4",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    "OMPI_MCA_ess_base_jobid": "1627455489",
    "PMIX_RANK": "3",
}


def test_openmpi_multi_node_takes_master_from_slurm_allocation():
    w = world({**OMPI, "SLURM_JOB_NODELIST": "gpu-[07-08]", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"})
    assert (w.rank, w.size, w.local_rank, w.local_size, w.node_rank, w.num_nodes) == (3, 4, 1, 2, 1, 2)
    assert (w.source, w.master_addr, w.hosts) == ("openmpi", "gpu-07", ("gpu-07", "gpu-08"))
    assert w.master_port == port_for_job("1627455489") and w.job_id == "1627455489"


def test_openmpi_one_node_is_loopback():
    w = world({**OMPI, "OMPI_COMM_WORLD_LOCAL_SIZE": "4"})
    assert w.master_addr == "127.0.0.1" and w.num_nodes == 1


def test_openmpi_multi_node_without_master_is_an_error():
    with pytest.raises(WorldError, match="-x MASTER_ADDR"):
        world(OMPI)


def test_openmpi_explicit_master_wins():
    w = world({**OMPI, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "4000"})
    assert (w.master_addr, w.master_port) == ("10.0.0.1", 4000)


def test_pmi_hydra():
    w = world({"PMI_RANK": "2", "PMI_SIZE": "3", "MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "3", "PMI_JOBID": "j9"})
    assert (w.rank, w.size, w.local_rank, w.local_size, w.source, w.master_addr) == (2, 3, 2, 3, "pmi", "127.0.0.1")
    assert w.job_id == "j9" and w.master_port == port_for_job("j9")


def test_horovodrun_gloo():
    w = world(
        {
            "HOROVOD_RANK": "1",
            "HOROVOD_SIZE": "2",
            "HOROVOD_LOCAL_RANK": "1",
            "HOROVOD_LOCAL_SIZE": "2",
            "HOROVOD_GLOO_RENDEZVOUS_PORT": "43977",
        }
    )
    assert (w.source, w.rank, w.size, w.local_rank, w.master_addr, w.job_id) == (
        "horovod",
        1,
        2,
        1,
        "127.0.0.1",
        "43977",
    )


SLURM = {
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "2",
    "SLURM_NTASKS": "7",
    "SLURM_STEP_NUM_TASKS": "7",
    "SLURM_STEP_TASKS_PER_NODE": "2(x3),1",
    "SLURM_TASKS_PER_NODE": "2(x3),1",
    "SLURM_STEP_NODELIST": "gpu-[01-03],cpu7",
    "SLURM_JOB_NODELIST": "gpu-[01-03],cpu7",
    "SLURM_NNODES": "4",
    "SLURM_JOB_ID": "123456",
    "SLURM_STEP_ID": "0",
}


def test_slurm_step_several_nodes():
    w = world(SLURM)
    assert (w.rank, w.size, w.local_rank, w.local_size, w.node_rank, w.num_nodes) == (5, 7, 1, 2, 2, 4)
    assert w.hosts == ("gpu-01", "gpu-02", "gpu-03", "cpu7")
    assert (w.master_addr, w.master_port, w.source, w.job_id) == ("gpu-01", 20000 + 123456 % 10000, "slurm", "123456.0")


def test_slurm_last_node_has_its_own_task_count():
    w = world({**SLURM, "SLURM_PROCID": "6", "SLURM_LOCALID": "0", "SLURM_NODEID": "3"})
    assert w.local_size == 1 and w.node_rank == 3


def test_slurm_jobs_on_one_node_get_different_ports():
    assert world(SLURM).master_port != world({**SLURM, "SLURM_JOB_ID": "123457"}).master_port


def test_slurm_srun_mpi_pmix_is_read_as_slurm():
    assert world({**SLURM, "PMIX_RANK": "5", "PMIX_NAMESPACE": "slurm.pmix.123456.0"}).source == "slurm"


def test_batch_script_without_step_is_one_process():
    batch = {k: v for k, v in SLURM.items() if not k.startswith("SLURM_STEP")}
    assert world({**batch, "SLURM_PROCID": "0"}) == World()


def test_slurm_bad_node_id():
    with pytest.raises(WorldError, match="SLURM_NODEID=9"):
        world({**SLURM, "SLURM_NODEID": "9"})


def test_not_an_integer_is_named():
    with pytest.raises(WorldError, match="SLURM_PROCID='x' is not an integer"):
        world({**SLURM, "SLURM_PROCID": "x"})


def test_rank_outside_world():
    with pytest.raises(WorldError, match="rank 9 outside 0..7"):
        world({**TORCHRUN, "RANK": "9"})


# precedence: the first source present wins
@pytest.mark.parametrize(
    "env,source",
    [
        ({**SLURM, **OMPI, **TORCHRUN}, "torchrun"),  # torchrun started by srun or mpirun
        ({**SLURM, **OMPI}, "openmpi"),  # mpirun inside an sbatch allocation
        ({**SLURM, "HOROVOD_RANK": "5", "HOROVOD_SIZE": "7"}, "horovod"),  # horovodrun --gloo in an allocation
        ({**SLURM, "PMI_RANK": "5", "PMI_SIZE": "7"}, "pmi"),  # srun --mpi=pmi2
        (SLURM, "slurm"),
    ],
)
def test_precedence(env, source):
    assert world(env).source == source


@pytest.mark.parametrize(
    "hostlist,expected",
    [
        ("node1", ["node1"]),
        ("gpu-[01-03,10],cpu7", ["gpu-01", "gpu-02", "gpu-03", "gpu-10", "cpu7"]),
        ("a[1-2]-ib[0-1]", ["a1-ib0", "a1-ib1", "a2-ib0", "a2-ib1"]),
        ("n[008-010]", ["n008", "n009", "n010"]),
        ("x1,y[3],z", ["x1", "y3", "z"]),
    ],
)
def test_hostlist_parser(hostlist, expected):
    assert parse_hostlist(hostlist) == expected


@pytest.mark.parametrize("bad", ["gpu-[01-03", "gpu-]01[", "gpu-[a-b]", "gpu-[[1]]"])
def test_hostlist_parser_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_hostlist(bad)


def test_tasks_per_node():
    assert parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert parse_tasks_per_node("4") == [4]
    with pytest.raises(ValueError):
        parse_tasks_per_node("2(3)")


@pytest.mark.skipif(
    shutil.which("scontrol") is None,
    reason="Slurm's scontrol is not installed (make test and .ci/run install slurm-wlm)",
)
def test_scontrol_and_parser_agree(tmp_path, monkeypatch):
    """scontrol expands host lists with a config but no running cluster; the fallback parser must agree."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=t\nSlurmctldHost=localhost\nNodeName=localhost CPUs=1\nPartitionName=p Nodes=localhost\n"
    )
    monkeypatch.setenv("SLURM_CONF", str(conf))
    for hostlist in ("gpu-[01-03,10],cpu7", "a[1-2]-ib[0-1]", "n[008-010]"):
        out = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == parse_hostlist(hostlist) == expand_hostlist(hostlist)


def test_expand_falls_back_to_the_parser_without_slurm_config(monkeypatch):
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    assert expand_hostlist("gpu-[01-02]") == ["gpu-01", "gpu-02"]


def test_detect_world_reads_real_openmpi_environment(tmp_path):
    """Real mpirun: each rank reads its own OMPI_COMM_WORLD_* variables."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("OpenMPI is not installed (make test and .ci/run install openmpi-bin)")
    code = (
        "import sys; from pathlib import Path; from launch.cluster.world import detect_world as d; w = d(); "
        "Path(sys.argv[1], f'rank{w.rank}').write_text(f'{w.source} {w.rank} {w.size} {w.local_rank} {w.master_addr}')"
    )
    out = subprocess.run(
        [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    seen = sorted(p.read_text() for p in tmp_path.glob("rank*"))
    assert seen == ["openmpi 0 2 0 127.0.0.1", "openmpi 1 2 1 127.0.0.1"]


# --- TF_CONFIG: TensorFlow's own convention -----------------------------------------------------


def tf_config_env(cluster, task=None, **extra):
    import json

    return {"TF_CONFIG": json.dumps({"cluster": cluster, **({"task": task} if task else {})}), **extra}


def test_tf_config_alone_gives_rank_world_and_hosts():
    w = world(tf_config_env({"worker": ["a:2222", "a:2223", "b:2222", "b:2223"]}, {"type": "worker", "index": 3}))
    assert (w.rank, w.size, w.local_rank, w.local_size, w.node_rank, w.num_nodes) == (3, 4, 1, 2, 1, 2)
    assert (w.source, w.master_addr, w.master_port, w.hosts) == ("tf_config", "a", 2222, ("a", "b"))
    assert w.tf_workers == ("a:2222", "a:2223", "b:2222", "b:2223")


def test_tf_config_chief_is_rank_zero_then_the_workers():
    cluster = {"chief": ["c:1"], "worker": ["w1:1", "w2:1"]}
    assert world(tf_config_env(cluster, {"type": "chief", "index": 0})).rank == 0
    assert world(tf_config_env(cluster, {"type": "worker", "index": 1})).rank == 2


def test_tf_config_that_agrees_with_the_launcher_keeps_the_launchers_world():
    env = {**TORCHRUN, **tf_config_env({"worker": [f"h{i}:1" for i in range(8)]}, {"type": "worker", "index": 5})}
    w = world(env)
    assert (w.source, w.rank, w.master_addr) == ("torchrun", 5, "node-a") and len(w.tf_workers) == 8


def test_tf_config_without_task_takes_the_rank_from_the_launcher():
    w = world({**OMPI, "MASTER_ADDR": "x", **tf_config_env({"worker": ["a:1", "b:1", "c:1", "d:1"]})})
    assert (w.source, w.rank, w.tf_workers[w.rank]) == ("openmpi", 3, "d:1")


@pytest.mark.parametrize(
    "cluster,task,says",
    [
        (
            {"worker": ["a:1", "b:1"]},
            {"type": "worker", "index": 0},
            "TF_CONFIG says rank 0 of 2 but torchrun says rank 5 of 8",
        ),
        ({"worker": ["a:1", "b:1"]}, None, "TF_CONFIG says a world of 2 but torchrun says rank 5 of 8"),
    ],
)
def test_tf_config_that_contradicts_the_launcher_is_an_error_naming_both(cluster, task, says):
    with pytest.raises(WorldError, match=says):
        world({**TORCHRUN, **tf_config_env(cluster, task)})


@pytest.mark.parametrize(
    "value,says",
    [
        ("{not json", "TF_CONFIG is not"),
        ('{"cluster": {"ps": ["a:1"]}}', "no chief or worker addresses"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task type 'ps'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "not in its cluster of 1"),
        ('{"cluster": {"worker": ["a:1", "b:1"]}}', 'no "task" and no launcher'),
    ],
)
def test_bad_tf_config_is_one_clear_error(value, says):
    with pytest.raises(WorldError, match=re.escape(says)):
        world({"TF_CONFIG": value})


def test_rank_and_world_size_alone_leave_who_shares_a_host_unknown():
    """Kubeflow's PyTorchJob gives only RANK, WORLD_SIZE and MASTER_*: the local ranks are a guess."""
    kubeflow = {"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456"}
    assert not world(kubeflow).locals_known
    assert world(TORCHRUN).locals_known and world({"RANK": "0", "WORLD_SIZE": "1"}).locals_known
    with pytest.raises(WorldError, match="LOCAL_WORLD_SIZE and LOCAL_RANK, or TF_CONFIG"):
        worker_addresses(world(kubeflow))


@pytest.mark.parametrize(
    "hosts,rank,expected",
    [
        # (local_rank, local_size, node_rank, num_nodes, hosts)
        (["a", "b"], 1, (0, 1, 1, 2, ("a", "b"))),  # one pod per rank
        (["a", "a", "b", "b"], 3, (1, 2, 1, 2, ("a", "b"))),  # block placement
        (["a", "b", "a", "b"], 2, (1, 2, 0, 2, ("a", "b"))),  # round-robin placement
        (["a", "a", "a"], 2, (2, 3, 0, 1, ("a",))),  # every rank on one host
        (["b", "a", "a"], 2, (1, 2, 1, 2, ("b", "a"))),  # nodes ordered by their lowest rank
    ],
)
def test_with_hosts_finds_who_shares_a_host(hosts, rank, expected):
    guessed = World(rank=rank, size=len(hosts), local_rank=rank, local_size=len(hosts), locals_known=False)
    w = with_hosts(guessed, hosts)
    assert (w.local_rank, w.local_size, w.node_rank, w.num_nodes, w.hosts) == expected
    assert w.locals_known and w.host == hosts[rank]


def test_a_lost_tensorflow_worker_is_named_as_a_rank_on_its_host():
    """TensorFlow names the worker task that stopped answering; a TF worker's task is its rank, and
    its host is the world's (the line torch_dist gives a lost rank: `lost rank 1 on node2`)."""
    from launch.cluster.world import rank_hosts

    world = World(rank=0, size=4, local_rank=0, local_size=2, num_nodes=2, hosts=("node1", "node2"))
    assert rank_hosts(world) == ["node1", "node1", "node2", "node2"]
    assert rank_hosts(World(size=2, local_size=2, hosts=("vm",))) == ["vm", "vm"]
    assert rank_hosts(World(size=3, local_size=1, num_nodes=2, hosts=("a", "b"))) == []  # unequal: unknown
    error = RuntimeError(  # as TensorFlow's coordination service words it
        "Graph execution error:\n\nThe following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:2\nThe tasks have crashed."
    )
    assert describe(error, rank_hosts(world)) == (
        "RuntimeError: lost rank 2 on node2: it stopped sending heartbeats (its process or host is gone)"
    )
    assert describe(error).startswith("RuntimeError: lost rank 2: it stopped")


def test_an_error_before_the_deadline_is_not_told_as_a_wait():
    """Seen on an H200: two ranks on one GPU made NCCL fail in 12 s, told as "did not all join
    within 300s"; an early error is said as what it is."""
    nccl = RuntimeError("NCCL error in: NCCLUtils.cpp:93, invalid usage (run with NCCL_DEBUG=WARN for details)")
    said = r"the 2 ranks could not join at node1:29500 \(after 0s\): .*invalid usage"
    with pytest.raises(WorldError, match=said), rendezvous.deadline(World(size=2), "node1", 29500, timeout=300):
        raise nccl


def test_gloo_s_sign_off_is_not_part_of_the_line():
    error = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:41234: GLHF! 🏖️")
    assert describe(error).endswith("] Read error [127.0.0.1 (localhost)]:41234"), describe(error)


def test_a_tensorflow_collective_that_lost_its_peer_names_the_rank():
    """With TensorFlow's C++ log quiet, the rank's line is all there is: the peer the ring could not
    reach is in the exception's text, as gRPC's remote target."""
    error = RuntimeError(
        "Graph execution error:\n\nDetected at node adam/CollectiveReduceV2 defined at (most recent call last):\n\n"
        "Collective ops is aborted by: failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:20381: Failed to connect to remote host: Connection refused\n"
        "Additional GRPC error information from remote target /job:worker/replica:0/task:1 while calling "
        "/tensorflow.WorkerService/RecvBuf:\n"
    )
    said = describe(error, ["node1", "node2"])
    assert said.startswith("RuntimeError: lost rank 1 on node2 (Collective ops is aborted by: failed to connect"), said
