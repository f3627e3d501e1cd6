"""Launch plans, sbatch scripts and the framework compatibility table, as values in this process."""

import shlex
from pathlib import Path

import pytest

from launch.config import load_config
from launch.errors import ConfigError, UserError
from launch.frameworks import FRAMEWORKS, Placement, check
from launch.jobs import launchers, slurm
from launch.jobs.jobspec import JobSpec, SlurmOptions, default_run_prefix

from numpy_engine import register

# (framework, overrides, placement, the refusal's words) -- every combination that cannot run
REFUSED = [
    ("tf", [], Placement(launcher="horovodrun"), "horovodrun does not run tf (Horovod's TensorFlow part"),
    ("tf", ["dist.backend=horovod"], Placement(), "use dist.backend=auto, gloo or nccl"),
    ("torch", [], Placement(launcher="horovodrun", program="doctor"), "doctor runs under local, torchrun, mpirun"),
    ("torch", [], Placement(launcher="mpirun", max_restarts=1), "--max-restarts works with the local and torchrun"),
    ("torch", [], Placement(launcher="slurm", max_restarts=1), "under slurm restart the job"),
    ("torch", [], Placement(launcher="torchrun", nodes=2, max_restarts=1), "needs log.run_name=NAME"),
    ("tf", ["dist.compression=fp16"], Placement(workers=2), "tf.distribute has no gradient compression"),
    (
        "torch",
        ["dist.backend=horovod", "dist.compression=powersgd"],
        Placement(workers=2),
        "Horovod compresses only to fp16",
    ),
    ("torch", ["dist.compression=fp16"], Placement(workers=1), "one worker has none"),
    ("tf", ["dist.strategy=mirrored"], Placement(workers=2), "dist.strategy=mirrored runs in one process"),
    ("torch", ["train.precision=fp16"], Placement(gpus_per_node=0), "train.precision=fp16 needs a GPU"),
    ("tf", ["train.precision=fp16"], Placement(launcher="slurm", gpus_per_node=0), "needs a GPU (mixed_float16)"),
    ("torch", [], Placement(launcher="local", min_nodes=1, nodes=2), "a node range (1:2) needs an elastic launcher"),
    ("tf", [], Placement(launcher="torchrun", min_nodes=1, nodes=2), "TensorFlow's workers are fixed"),
    ("tf", [], Placement(launcher="slurm", min_nodes=1, nodes=2, template="tf"), "needs the torch template"),
    ("tf", [], Placement(launcher="local", workers=2, min_nodes=2, nodes=2, hosts=False), "pass --hosts node1,node2"),
    ("torch", [], Placement(launcher="horovodrun", workers=2, min_nodes=2, nodes=2), "horovodrun here starts one node"),
    ("torch", [], Placement(launcher="slurm", workers=8, min_nodes=2, nodes=2, gpus_per_node=2), "make them equal"),
    ("torch", ["dist.backend=nccl"], Placement(launcher="slurm", gpus_per_node=0), "nccl needs GPUs"),
    ("torch", [], Placement(launcher="slurm", workers=1, gpus_per_node=4), "1 tasks per node but --gpus-per-node 4"),
]
ACCEPTED = [
    ("torch", ["dist.compression=fp16"], Placement(workers=2)),
    ("torch", ["dist.compression=powersgd", "dist.backend=gloo"], Placement(workers=1)),
    ("torch", ["dist.backend=horovod", "dist.compression=fp16"], Placement(launcher="horovodrun", workers=2)),
    ("torch", ["train.precision=fp16"], Placement(launcher="slurm", workers=8, min_nodes=2, nodes=2, gpus_per_node=4)),
    ("torch", ["train.precision=fp16"], Placement(launcher="local")),  # GPUs unknown until the trainer looks
    ("torch", ["dist.backend=nccl"], Placement(launcher="slurm", workers=2)),  # GPUs in options passed through
    ("torch", [], Placement(launcher="torchrun", min_nodes=1, nodes=2)),
    ("torch", [], Placement(launcher="slurm", min_nodes=1, nodes=2, template="torch")),
    ("tf", ["dist.strategy=mirrored", "dist.cpu_devices=2"], Placement(workers=1)),
    (
        "tf",
        [],
        Placement(launcher="mpirun", workers=4, min_nodes=2, nodes=2, hosts=False),
    ),  # mpirun's ranks need no TF_CONFIG
    ("tf", ["train.precision=bf16"], Placement(gpus_per_node=0)),
    ("tf", [], Placement(launcher="slurm", workers=1, gpus_per_node=4)),  # MirroredStrategy over the 4
    ("torch", ["log.run_name=r"], Placement(launcher="torchrun", min_nodes=1, nodes=2, max_restarts=1)),
    ("tf", [], Placement(launcher="local", max_restarts=2)),
    ("torch", [], Placement(launcher="mpirun", program="doctor")),
]


@pytest.mark.parametrize("framework,overrides,where,words", REFUSED, ids=[r[3] for r in REFUSED])
def test_incompatible_combinations_are_refused_with_the_fix(framework, overrides, where, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")) as refused:
        check(load_config(None, overrides), framework, where)
    assert "\n" not in str(refused.value)


# A third framework's refusals are built from its row (tests/numpy_engine.py: local, auto, no compression).
NUMPY_REFUSED = [
    (["dist.backend=gloo"], Placement(), "dist.backend=gloo does not run numpy: use dist.backend=auto"),
    ([], Placement(launcher="torchrun"), "--launcher torchrun does not run numpy: use --launcher local"),
    (["dist.compression=fp16"], Placement(workers=2), "dist.compression=fp16: one process has nothing to compress"),
    (["train.precision=fp16"], Placement(gpus_per_node=0), "needs a GPU (numpy has no fp16 training)"),
]


@pytest.mark.parametrize("overrides,where,words", NUMPY_REFUSED, ids=[r[2] for r in NUMPY_REFUSED])
def test_a_framework_s_refusals_come_from_its_row(monkeypatch, overrides, where, words):
    register(monkeypatch)
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check(load_config(None, overrides), "numpy", where)


@pytest.mark.parametrize("framework,overrides,where", ACCEPTED)
def test_compatible_combinations_pass(framework, overrides, where):
    check(load_config(None, overrides), framework, where)


def test_config_errors_exit_like_usage_errors():
    with pytest.raises(ConfigError):
        check(load_config(None, ["dist.compression=fp16"]), "tf", Placement(workers=2))


def test_every_framework_names_a_trainer_module_and_its_checkpoints():
    assert {fw.module for fw in FRAMEWORKS.values()} == {"torch_dist.train", "tf_dist.train"}
    assert FRAMEWORKS["torch"].checkpoint_step("step-00000469.pt") == 469
    assert FRAMEWORKS["tf"].checkpoint_step("ckpt-469.index") == 469
    assert FRAMEWORKS["tf"].checkpoint_step("step-00000469.pt") is None


def spec(**fields) -> JobSpec:
    return JobSpec(**{"framework": "torch", "python": "python", "config_path": "/c.yaml", **fields})


def test_torchrun_plan_across_nodes():
    plan = launchers.plan(
        spec(
            launcher="torchrun",
            nproc=4,
            nodes=2,
            node_rank=1,
            master_addr="gpu-01",
            master_port=29400,
            overrides=("train.epochs=1",),
        )
    )
    assert plan.command[:4] == ["python", "-m", "torch.distributed.run", "--nnodes=2"]
    assert {"--rdzv-backend=static", "--master-addr=gpu-01", "--master-port=29400", "--node-rank=1"} <= set(
        plan.command
    )
    assert plan.command[-4:] == ["torch_dist.train", "--config", "/c.yaml", "train.epochs=1"]
    assert [w.rank for w in plan.worlds] == [4, 5, 6, 7] and plan.per_rank == []


def test_torchrun_plan_elastic_with_restarts_uses_c10d():
    plan = launchers.plan(
        spec(launcher="torchrun", nodes=2, min_nodes=1, hosts=("a", "b"), master_addr="a", max_restarts=3)
    )
    assert "--nnodes=1:2" in plan.command and "--max-restarts=3" in plan.command
    assert "--rdzv-backend=c10d" in plan.command  # elastic: the one place the pickled rendezvous is used


def test_local_tf_plan_gives_each_rank_its_environment_and_tf_config():
    plan = launchers.plan(
        spec(
            framework="tf",
            nproc=2,
            hosts=("gpu-a", "gpu-b"),
            nodes=2,
            node_rank=1,
            master_addr="gpu-a",
            master_port=29400,
        )
    )
    (cmd0, env0), (_, env1) = plan.per_rank
    assert cmd0 == ["python", "-m", "tf_dist.train", "--config", "/c.yaml"]
    assert (env0["RANK"], env1["RANK"], env0["WORLD_SIZE"], env0["MASTER_ADDR"]) == ("2", "3", "4", "gpu-a")
    assert '"index": 3' in env1["TF_CONFIG"] and "gpu-b:29402" in env1["TF_CONFIG"]


def test_mpirun_plan_across_hosts_exports_the_cluster():
    plan = launchers.plan(spec(framework="tf", launcher="mpirun", nproc=2, nodes=2, hosts=("a", "b"), master_addr="a"))
    line = shlex.join(plan.command)
    assert line.startswith("mpirun -x TF_CONFIG -np 4 --tag-output") and "--host a:2,b:2" in line
    assert "--map-by ppr:2:node" in line and "MASTER_ADDR=a" in line and '"worker"' in plan.env["TF_CONFIG"]
    # one mpirun starts both hosts' ranks: the plan (and the dry run's table) lists all four
    assert [(w.rank, w.local_rank, w.hosts[w.node_rank]) for w in plan.worlds] == [
        (0, 0, "a"),
        (1, 1, "a"),
        (2, 0, "b"),
        (3, 1, "b"),
    ]


def test_horovodrun_plan_adds_the_backend():
    plan = launchers.plan(spec(launcher="horovodrun", nproc=2))
    assert plan.command[1:5] == ["-np", "2", "-H", "localhost:2"] and plan.command[-1] == "dist.backend=horovod"


@pytest.mark.parametrize(
    "fields,words",
    [
        ({"nproc": 0}, "--nproc and --nodes must be at least 1"),
        ({"nodes": 2, "hosts": ("a", "b", "c")}, "--hosts names 3 node(s) but --nodes is 2"),
        ({"nodes": 2}, "loopback address"),
    ],
)
def test_plans_refuse_placements_that_cannot_start(fields, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        launchers.plan(spec(**fields))


def test_sbatch_script_for_an_elastic_torch_job():
    job = spec(launcher="slurm", nproc=2, nodes=2, min_nodes=1, slurm=SlurmOptions(gpus_per_node=2, partition="gpu"))
    prefix = default_run_prefix(job, load_config(None, []))
    script = slurm.render(job, prefix, Path("/runs"))
    assert prefix == "torch-mlp-mnist-w2-4"
    assert "#SBATCH --nodes=1-2" in script and "--ntasks-per-node" not in script
    assert "#SBATCH --gpus-per-node=2" in script and "#SBATCH --partition=gpu" in script
    assert 'run_dir=/runs/torch-mlp-mnist-w2-4-"$SLURM_JOB_ID"' in script


def test_sbatch_script_quotes_every_value():
    job = spec(
        launcher="slurm",
        framework="tf",
        overrides=("log.run_name=$(rm -rf ~)",),
        slurm=SlurmOptions(setup=("module load cuda",)),
    )
    script = slurm.render(job, "x", Path("/runs"))
    assert "'log.run_name=$(rm -rf ~)'" in script and "\nmodule load cuda\n" in script
    with pytest.raises(UserError, match="may hold only letters"):
        slurm.render(spec(launcher="slurm", slurm=SlurmOptions(job_name="x; rm -rf ~")), "x", Path("/runs"))
