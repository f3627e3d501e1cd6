"""mnist-dist run: dry-run plans for every launcher, preflight errors, and real local/mpirun starts."""

import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launch.errors import UserError
from launch.jobs import slurm
from launch.jobs.jobspec import JobSpec, SlurmOptions

from helpers import ROOT, cli, read_json, read_scalars, run

pytestmark = pytest.mark.timeout(900)
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="OpenMPI's mpirun is not installed")
needs_fashion = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)


def mnist_dist(*args, env=None, timeout=600, cwd=ROOT):
    return run([sys.executable, "-m", "launch", *args], cwd=cwd, timeout=timeout, env=env)


def dry(*args):
    out = cli("run", "--dry-run", "--config", "configs/mlp.yaml", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_dry_run_local_tf_shows_each_rank_with_tf_config():
    text = dry("--framework", "tf", "--launcher", "local", "--nproc", "2", "--master-port", str(_free_port()))
    lines = text.splitlines()
    assert lines[0].startswith("RANK=0 WORLD_SIZE=2 LOCAL_RANK=0") and "-m tf_dist.train --config" in lines[0]
    assert lines[1].startswith("RANK=1 WORLD_SIZE=2 LOCAL_RANK=1")
    assert "TF_CONFIG" in text and '"task":{"type":"worker","index":1}' in text


def test_dry_run_torchrun_single_node():
    text = dry("--framework", "torch", "--launcher", "torchrun", "--nproc", "4", "train.epochs=1")
    cmd = shlex.split(text.splitlines()[0])
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nnodes=1"] and "--nproc-per-node=4" in cmd
    # the static rendezvous: --standalone's c10d would load a pickle from a store any local user can reach
    assert "--rdzv-backend=static" in cmd and "--standalone" not in cmd and "--node-rank=0" in cmd
    assert cmd[-1] == "train.epochs=1" and "TF_CONFIG" not in text
    assert len([line for line in text.splitlines() if line[:1].isdigit()]) == 4  # one table row per rank


def test_dry_run_torchrun_restarts_resume_from_the_checkpoint():
    text = dry("--framework", "torch", "--launcher", "torchrun", "--nproc", "2", "--max-restarts", "2")
    cmd = shlex.split(text.splitlines()[0])
    assert "--max-restarts=2" in cmd and "--rdzv-backend=static" in cmd
    assert cmd[-1] == "checkpoint.resume=true"


def test_dry_run_torchrun_two_nodes_needs_a_real_master():
    out = cli("run", "--dry-run", "--framework", "torch", "--launcher", "torchrun", "--nodes", "2", "--nproc", "4")
    assert out.returncode == 1 and "loopback address, which other nodes cannot reach" in out.stderr
    text = dry(
        "--framework",
        "torch",
        "--launcher",
        "torchrun",
        "--nodes",
        "2",
        "--nproc",
        "4",
        "--node-rank",
        "1",
        "--master-addr",
        "gpu-01",
        "--master-port",
        "29400",
    )
    cmd = shlex.split(text.splitlines()[0])
    # fixed nodes: the static rendezvous, which honours the node rank (c10d ignored it, with a warning)
    assert {"--rdzv-backend=static", "--master-addr=gpu-01", "--master-port=29400", "--node-rank=1"} <= set(cmd)
    ranks = [line.split()[0] for line in text.splitlines() if line[:1].isdigit()]
    assert ranks == ["4", "5", "6", "7"]  # this node's ranks


def test_dry_run_elastic_node_range():
    text = dry(
        "--framework",
        "torch",
        "--launcher",
        "torchrun",
        "--nodes",
        "1:2",
        "--hosts",
        "gpu-a,gpu-b",
        "--max-restarts",
        "3",
        "log.run_name=e",
    )
    cmd = shlex.split(text.splitlines()[0])
    assert "--nnodes=1:2" in cmd and "--rdzv-backend=c10d" in cmd and "--max-restarts=3" in cmd
    assert not [arg for arg in cmd if arg.startswith("--node-rank")]  # c10d orders the nodes itself
    assert cmd[-1] == "checkpoint.resume=true"
    sbatch = dry("--framework", "torch", "--launcher", "slurm", "--nodes", "1:2", "--nproc", "2")
    assert "#SBATCH --nodes=1-2" in sbatch and "log.run_name=torch-mlp-mnist-w2-4-" in sbatch
    assert "--ntasks-per-node" not in sbatch  # Slurm would size the job for one node; one agent per node it gets
    refused = cli("run", "--dry-run", "--framework", "tf", "--launcher", "slurm", "--nodes", "1:2")
    assert refused.returncode != 0 and "a node range (1:2) needs the torch template" in refused.stderr


@pytest.mark.parametrize(
    "args,error",
    [
        (["--launcher", "local", "--nodes", "1:2", "--hosts", "a,b"], "a node range (1:2) needs an elastic launcher"),
        (["--launcher", "mpirun", "--nodes", "1:2", "--hosts", "a,b"], "a node range (1:2) needs an elastic launcher"),
        (["--launcher", "torchrun", "--nodes", "2:1"], "MIN at most MAX"),
        (["--launcher", "torchrun", "--nodes", "one"], "is not a node count N or a range MIN:MAX"),
        (
            ["--launcher", "torchrun", "--nodes", "1:2", "--hosts", "a,b", "--max-restarts", "1"],
            "--max-restarts across nodes needs log.run_name=NAME",
        ),
    ],
)
def test_node_ranges_are_checked_before_anything_starts(args, error):
    out = cli("run", "--dry-run", "--framework", "torch", *args)
    assert out.returncode != 0 and error in out.stderr and "Traceback" not in out.stderr


def test_tf_refuses_a_node_range_under_torchrun():
    out = cli("run", "--dry-run", "--framework", "tf", "--launcher", "torchrun", "--nodes", "1:2", "--hosts", "a,b")
    assert out.returncode != 0 and "TensorFlow's workers are fixed while they run" in out.stderr


def test_dry_run_mpirun_says_why_it_adds_flags():
    text = dry("--framework", "torch", "--launcher", "mpirun", "--nproc", str((os.cpu_count() or 1) + 1))
    assert text.startswith("mpirun -np ") and "--oversubscribe" in text and "# --oversubscribe:" in text
    if os.geteuid() == 0:
        assert "--allow-run-as-root" in text and "# --allow-run-as-root: running as root" in text
    assert "--oversubscribe" not in dry("--framework", "tf", "--launcher", "mpirun", "--nproc", "1").split("\n")[0]


SBATCH = [
    "--launcher",
    "slurm",
    "--nodes",
    "2",
    "--nproc",
    "4",
    "--gpus-per-node",
    "4",
    "--partition",
    "gpu",
    "--account",
    "proj1",
    "--job-name",
    "cnn-run",
    "--cpus-per-task",
    "8",
    "--time",
    "02:00:00",
    "--sbatch=--qos=high",
    "--setup",
    "module load cuda/12",
    "--setup",
    "source ~/venv/bin/activate",
]


@pytest.mark.parametrize(
    "framework,template,task_line,cpus_line,launch_line",
    [
        # --cpus-per-task is per worker: the torch template's one task per node is the agent of 4
        (
            "torch",
            None,
            "#SBATCH --ntasks-per-node=1",
            "#SBATCH --cpus-per-task=32",
            'srun --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" ',
        ),
        (
            "tf",
            None,
            "#SBATCH --ntasks-per-node=4",
            "#SBATCH --cpus-per-task=8",
            'srun --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" ',
        ),
        (
            "torch",
            "mpi",
            "#SBATCH --ntasks-per-node=4",
            "#SBATCH --cpus-per-task=8",
            'mpirun -np "$SLURM_NTASKS" --use-hwthread-cpus --map-by slot:PE="$SLURM_CPUS_PER_TASK"',
        ),
    ],
)
def test_dry_run_sbatch_two_nodes_four_gpus(framework, template, task_line, cpus_line, launch_line):
    extra = ["--template", template] if template else []
    text = dry("--framework", framework, *SBATCH, *extra)
    for line in (
        "#SBATCH --job-name=cnn-run",
        "#SBATCH --nodes=2",
        task_line,
        cpus_line,
        "#SBATCH --time=02:00:00",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1",
        "#SBATCH --qos=high",
        "module load cuda/12",
        "source ~/venv/bin/activate",
    ):
        assert line in text.splitlines(), line
    assert launch_line in text
    rows = [line.split() for line in text.splitlines() if line[:1].isdigit()]
    assert len(rows) == 8 and rows[5][:4] == ["5", "1", "node1", "node0:20000"]
    if framework == "tf":
        assert '"worker":["node0:20001","node0:20002","node0:20003","node0:20004","node1:20001"' in text


def test_sbatch_script_is_valid_bash():
    text = dry("--framework", "torch", *SBATCH).split("\n\n#")[0]
    check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_hostile_override_values_are_quoted(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"data.dir=/tmp/x; touch {marker}; echo $(touch {marker})"
    text = dry("--framework", "tf", "--launcher", "slurm", hostile)
    srun_line = next(line for line in text.splitlines() if line.startswith("preemptible srun "))
    words = shlex.split(srun_line)
    assert f"/tmp/x; touch {marker}; echo $(touch {marker})" in " ".join(words)  # one literal argument
    assert any(w.startswith("data.dir=/tmp/x; touch") for w in words)
    # and running the line through bash with srun replaced by printf proves nothing executes
    script = srun_line.replace("preemptible srun --kill-on-bad-exit=1", "printf '%s\\n'", 1)
    subprocess.run(["bash", "-c", f"SLURM_JOB_ID=7; {script}"], capture_output=True, timeout=30, check=True)
    assert not marker.exists()


def test_every_template_can_be_preempted():
    for template, framework in (("torch", "torch"), ("tf", "tf"), ("mpi", "torch")):
        text = dry("--framework", framework, "--launcher", "slurm", "--template", template, "--preempt-signal=USR2@90")
        assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR2@90" in text
        assert 'trap \'requeue=1; mkdir -p "$run_dir"; touch "$run_dir/PREEMPT"\' USR2' in text
        assert "\npreemptible " in text and "checkpoint.resume=true" in text


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--job-name", "x; rm -rf ~", "--job-name 'x; rm -rf ~' may hold only letters"),
        ("--partition", "gpu\n#SBATCH --uid=0", "--partition"),
        ("--time", "1 hour", "is not a Slurm time"),
        ("--output", "/tmp/$(reboot).out", "must be a path without spaces, quotes or shell characters"),
        ("--sbatch", "--qos=high; reboot", "extra #SBATCH option"),
        ("--preempt-signal", "KILL; reboot", "must look like USR1@60"),
    ],
)
def test_hostile_sbatch_options_are_refused(flag, value, message):
    out = cli(
        "run",
        "--dry-run",
        "--framework",
        "torch",
        "--launcher",
        "slurm",
        "--config",
        "configs/mlp.yaml",
        f"{flag}={value}",
    )
    assert out.returncode == 1 and message in out.stderr and out.stdout == ""


def test_nccl_needs_one_gpu_per_task():
    out = cli(
        "run",
        "--dry-run",
        "--framework",
        "torch",
        "--launcher",
        "slurm",
        "--nproc",
        "8",
        "--gpus-per-node",
        "4",
        "--config",
        "configs/mlp.yaml",
    )
    assert out.returncode == 1 and "--nproc 8 tasks per node but --gpus-per-node 4" in out.stderr
    out = cli(
        "run",
        "--dry-run",
        "--framework",
        "torch",
        "--launcher",
        "slurm",
        "--config",
        "configs/mlp.yaml",
        "dist.backend=nccl",
    )
    assert out.returncode == 1 and "dist.backend=nccl needs GPUs" in out.stderr


def test_missing_programs_are_named(tmp_path):
    env = {"PATH": str(tmp_path)}  # nothing on PATH: no mpirun, no sbatch
    for launcher, program in (("mpirun", "mpirun"), ("slurm", "sbatch")):
        out = mnist_dist(
            "run",
            "--framework",
            "torch",
            "--launcher",
            launcher,
            "--config",
            "configs/mlp.yaml",
            "data.dataset=synthetic",
            env=env,
        )
        assert out.returncode == 1, out.stderr
        assert f"{program} not found on PATH" in out.stderr


def test_port_in_use_is_refused():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = mnist_dist(
            "run",
            "--framework",
            "tf",
            "--nproc",
            "2",
            "--master-port",
            str(port),
            "--config",
            "configs/mlp.yaml",
            "data.dataset=synthetic",
        )
    assert out.returncode == 1 and f"port {port} is already in use" in out.stderr


def test_bad_config_fails_before_anything_starts(tmp_path):
    out = mnist_dist(
        "run",
        "--framework",
        "torch",
        "--nproc",
        "2",
        "--config",
        "configs/mlp.yaml",
        "train.epocs=1",
        f"log.dir={tmp_path}",
    )
    assert out.returncode == 2 and "did you mean train.epochs?" in out.stderr and not any(tmp_path.iterdir())


def test_local_launcher_prefixes_other_ranks_and_trains(tmp_path):
    out = mnist_dist(
        "run",
        "--framework",
        "tf",
        "--nproc",
        "2",
        "--config",
        "configs/mlp.yaml",
        "data.dataset=synthetic",
        "data.limit=2000",
        "train.epochs=1",
        "train.threads=1",
        f"log.dir={tmp_path}",
        "log.run_name=l",
        "log.progress=never",
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "tf_dist.train: done:" in out.stdout
    other = [line for line in out.stdout.splitlines() if line.startswith("[rank 1] ")]
    assert all(not line.startswith("[rank 1] tf_dist.train: done") for line in other)
    assert read_json(tmp_path / "l" / "summary.json")["world_size"] == 2


def test_a_requested_stop_under_the_local_launcher_is_told_as_a_stop(tmp_path):
    """A PREEMPT file stops both ranks at one step: exit 75 and the chief's one line, no failure talk."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "PREEMPT").touch()
    common = ["--config", "configs/mlp.yaml", "data.dataset=synthetic", "data.limit=2000", "train.threads=1"]
    out = mnist_dist(
        "run", "--framework", "torch", "--nproc", "2", *common, "log.interval=5", f"log.dir={tmp_path}",
        "log.run_name=r", "log.progress=never", timeout=300,
    )  # fmt: skip
    said = out.stdout + out.stderr
    assert out.returncode == 75, said[-3000:]
    assert "stop requested: checkpointed step 5" in said
    assert "stopping the other ranks" not in said and "exited with code 75" not in said
    # one rank that fails: its own line and the launcher's, and no "other ranks" to stop
    one = mnist_dist("run", "--framework", "torch", *common, "train.precision=fp16", f"log.dir={tmp_path}")
    assert one.returncode == 2 and "exited with code 2" in one.stdout + one.stderr
    assert "stopping the other ranks" not in one.stdout + one.stderr


def test_local_launcher_fails_fast_when_a_rank_fails(tmp_path):
    out = mnist_dist(
        "run",
        "--framework",
        "torch",
        "--nproc",
        "2",
        "--config",
        "configs/mlp.yaml",
        "data.dataset=synthetic",
        "train.precision=fp16",
        f"log.dir={tmp_path}",
        timeout=300,
    )
    assert out.returncode == 2 and "fp16 needs a GPU" in out.stdout
    assert "exited with code 2; stopping the other ranks" in out.stdout + out.stderr


@needs_fashion
@needs_mpirun
def test_mpirun_launcher_trains(tmp_path):
    """The run trains to 80%; the TensorFlow one is a documented command, checked the same way in
    test_documented_commands.py."""
    out = mnist_dist(
        "run",
        "--framework",
        "torch",
        "--launcher",
        "mpirun",
        "--nproc",
        "2",
        "--config",
        "configs/mlp.yaml",
        "data.dataset=fashion-mnist",
        "train.epochs=1",
        "train.threads=1",
        f"log.dir={tmp_path}",
        "log.run_name=m",
        "log.progress=never",
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert "fashion-mnist data at /usr/share/datasets/fashion-mnist" in out.stdout  # checked once, up front
    summary = read_json(tmp_path / "m" / "summary.json")
    assert summary["world_size"] == 2 and summary["final_eval_accuracy"] >= 0.8
    assert read_scalars(tmp_path / "m")["throughput/images_per_sec"]


def test_templates_are_packaged():
    assert {p.stem for p in slurm.template_dir().glob("*.sbatch")} == set(slurm.TEMPLATES)
    assert (slurm.template_dir() / "preemption.sh").is_file()
    with pytest.raises(UserError, match="the tf template runs tf_dist.train"):
        slurm.render(JobSpec("torch", slurm=SlurmOptions(template="tf")), "x", Path("runs"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dry_run_local_tf_across_hosts_gives_each_rank_tf_config():
    out = cli(
        "run",
        "--framework",
        "tf",
        "--hosts",
        "gpu-a,gpu-b",
        "--node-rank",
        "1",
        "--nproc",
        "2",
        "--master-port",
        "29400",
        "--dry-run",
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert "MASTER_ADDR=gpu-a" in first and "RANK=2" in first
    assert '"worker":["gpu-a:29401","gpu-a:29402","gpu-b:29401","gpu-b:29402"]' in out.stdout.replace(" ", "")
    assert '"index":3' in out.stdout


def test_tf_on_several_nodes_without_hosts_is_refused_with_the_fix():
    out = cli("run", "--framework", "tf", "--nodes", "2", "--master-addr", "gpu-a", "--dry-run")
    assert out.returncode != 0 and "pass --hosts node1,node2" in out.stderr


def test_dry_run_mpirun_across_hosts_names_them_and_exports_the_cluster():
    out = cli("run", "--framework", "tf", "--launcher", "mpirun", "--hosts", "gpu-a,gpu-b", "--nproc", "2", "--dry-run")
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[0]
    assert "--host gpu-a:2,gpu-b:2" in line and "-x TF_CONFIG" in line and "-x MASTER_ADDR=gpu-a" in line


def test_hosts_and_nodes_must_agree():
    out = cli("run", "--framework", "torch", "--hosts", "a,b,c", "--nodes", "2", "--dry-run")
    assert out.returncode != 0 and "--hosts names 3 node(s) but --nodes is 2" in out.stderr


def test_an_incompatible_combination_is_refused_before_a_script_is_rendered():
    out = cli(
        "run",
        "--dry-run",
        "--framework",
        "tf",
        "--launcher",
        "slurm",
        "--nodes",
        "2",
        "--nproc",
        "2",
        "--config",
        "configs/mlp.yaml",
        "dist.compression=powersgd",
    )
    assert out.returncode == 2 and out.stdout == "" and "tf.distribute has no gradient compression" in out.stderr
