"""Fault drills with real processes: dead workers, restarts, killed checkpoint writes, hostile input,
and exit hygiene over many runs."""

import concurrent.futures
import contextlib
import importlib.util
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launch.outputs.runlock import RunLock
from launch.signals import PREEMPTED

from helpers import (
    ONE_THREAD,
    ROOT,
    Leftovers,
    environ_of,
    live_pids_mentioning,
    read_json,
    read_scalars,
    run,
    train_cmd,
)
from slurm_cluster import _wait_for

pytestmark = pytest.mark.timeout(1800)
MLP = str(ROOT / "configs/mlp.yaml")


def rank_pid(text: str, rank: int) -> int | None:
    """The pid of the worker process of `rank` among those whose command line mentions `text`."""
    for pid in live_pids_mentioning(text):
        env = environ_of(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        parts = cmdline.split(b"\0")
        module = parts[parts.index(b"-m") + 1] if b"-m" in parts[:-1] else b""
        if module not in (b"torch_dist.train", b"tf_dist.train"):
            continue  # a launcher, torchrun's agent or mpirun: not a worker
        if env.get("RANK", env.get("OMPI_COMM_WORLD_RANK")) == str(rank):
            return pid
    return None


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, env={**os.environ, **ONE_THREAD}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def end(job: subprocess.Popen, tmp_path: Path) -> None:
    """Kill the command and every process working in tmp_path: the ranks it started sit in sessions
    of their own, where killing the command alone would leave them when a test fails."""
    job.kill()
    for pid in live_pids_mentioning(str(tmp_path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


LONG = ["data.dataset=synthetic", "train.epochs=1000", "train.threads=1", "log.progress=never"]


@pytest.mark.parametrize("framework,launcher", [("torch", "torchrun"), ("torch", "mpirun"), ("tf", "local")])
def test_a_dead_worker_never_hangs_the_job(tmp_path, framework, launcher):
    cmd = [
        sys.executable,
        "-m",
        "launch",
        "run",
        "--framework",
        framework,
        "--launcher",
        launcher,
        "--nproc",
        "2",
        "--config",
        MLP,
        *LONG,
        f"log.dir={tmp_path}",
        "log.run_name=r",
    ]
    job = start(cmd, tmp_path)
    try:
        _wait_for(lambda: list((tmp_path / "r").glob("events.out.tfevents.*")), 300, "training to start", 0.2)
        victim = _wait_for(lambda: rank_pid(str(tmp_path), 1), 30, "rank 1's pid", 0.1)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        out, _ = job.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        end(job, tmp_path)
    assert job.returncode != 0
    assert took < 60, f"the job took {took:.0f}s to fail"
    said = {"torchrun": "rank      : 1", "mpirun": "rank 1", "local": "rank 1 (pid"}[launcher]
    assert said in out, out[-3000:]
    # TensorFlow's C++ log (gRPC's "Socket closed" from the ring, five lines) stays off the terminal
    if framework == "tf":
        assert not re.search(r"^E\d{4} |ring_alg\.cc|GRPC error", out, re.M), out[-3000:]
        assert re.search(r"error: rank 0 on \S+: \w+Error: lost rank 1", out), out[-3000:]  # said once, by the rank
    _wait_for(lambda: not live_pids_mentioning(str(tmp_path)), 60, "every worker to end", 0.2)


HOROVOD = pytest.mark.skipif(importlib.util.find_spec("horovod") is None, reason="`make horovod` builds Horovod")


def stopped_by(sig: int, cmd: list[str], tmp_path: Path, training: str, leftovers: Leftovers) -> tuple[int, str, list]:
    """Start `cmd`, send it `sig` once a file matching `training` (a glob in tmp_path) shows it trains,
    and return its exit code, its output and the lines it wrote after the signal. Nothing it started,
    even in a new session, may outlive it: checked at once, not after the grace the suite gives every
    test (conftest.py `leftovers`)."""
    job = start(cmd, tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    _wait_for(lambda: list(tmp_path.glob(training)), 300, "training to start", 0.2)
    before = len(lines)
    job.send_signal(sig)
    job.wait(timeout=120)
    reader.join(timeout=30)
    left = leftovers()
    out = "".join(lines)
    assert not left, f"{Leftovers.describe(left)}\n{out[-3000:]}"
    return job.returncode, out, lines[before:]


@pytest.mark.parametrize(
    "framework,launcher", [("torch", "torchrun"), ("tf", "local"), pytest.param("torch", "horovodrun", marks=HOROVOD)]
)
def test_sigterm_to_mnist_dist_run_stops_every_rank_at_a_checkpoint(tmp_path, framework, launcher, leftovers):
    """`kill` of the command (a job's end, a shell's) reaches the launcher and every rank: they stop
    at one step, checkpoint it, leave together with the documented 75, and nothing outlives the command."""
    cmd = [sys.executable, "-m", "launch", "run", "--framework", framework, "--launcher", launcher, "--nproc", "2"]
    cmd += ["--config", MLP, *LONG, "log.interval=5", f"log.dir={tmp_path}", "log.run_name=r"]
    code, out, _ = stopped_by(signal.SIGTERM, cmd, tmp_path, "r/events.out.tfevents.*", leftovers)
    assert code == PREEMPTED, out[-3000:]
    assert "stop requested: checkpointed step" in out, out[-3000:]
    assert list((tmp_path / "r" / "checkpoints").iterdir())
    # the start line names who started the ranks (the local launcher gives them torchrun's variables)
    assert f"2 worker(s) via {dict(horovodrun='openmpi').get(launcher, launcher)}," in out
    assert "train: error" not in out and "Traceback" not in out, out[-3000:]  # no rank failed, nor a launcher


@pytest.mark.parametrize("launcher", ["torchrun", "mpirun", "local"])
def test_sigkill_of_mnist_dist_run_leaves_no_process_and_no_lock(tmp_path, launcher, leftovers):
    """`kill -9` or the OOM killer gives the command no chance to stop its children: the kernel
    tells each (PR_SET_PDEATHSIG), the launcher stops its ranks, they checkpoint and free the run's
    lock, within seconds, so a resume is not refused (its first act is taking the lock, done here)."""
    cmd = [sys.executable, "-m", "launch", "run", "--framework", "torch", "--launcher", launcher, "--nproc", "2"]
    cmd += ["--config", MLP, *LONG, "log.interval=5", f"log.dir={tmp_path}", "log.run_name=r"]
    job = start(cmd, tmp_path)
    try:
        _wait_for(lambda: list(tmp_path.glob("r/events.out.tfevents.*")), 300, "training to start", 0.2)
        job.kill()
        job.wait()
        # 30 s: torchrun gives its workers that long after its SIGTERM (torch.distributed.elastic's
        # close timeout); under the suite's parallel load a stop at a common step and its checkpoint
        # once took more than 10
        try:
            _wait_for(lambda: not leftovers(), 30, "every process of the killed run to end", 0.2)
        except TimeoutError:
            pytest.fail(f"left running 30 s after the kill: {Leftovers.describe(leftovers())}")
    finally:
        end(job, tmp_path)
    assert list((tmp_path / "r" / "checkpoints").glob("step-*.pt")), "the ranks stopped at a checkpoint"
    lock = RunLock(tmp_path / "r")
    assert lock.try_acquire() is None, "a resume would be refused by the killed run's lock"
    lock.release()


def test_ctrl_c_on_run_under_torchrun_is_one_stop_line_and_130(tmp_path, leftovers):
    """A terminal's Ctrl-C reaches `mnist-dist run` alone (its children have sessions of their own):
    every rank checkpoints one step; torchrun's SIGTERM traceback is kept in a file, not printed."""
    cmd = [sys.executable, "-m", "launch", "run", "--framework", "torch", "--launcher", "torchrun", "--nproc", "2"]
    cmd += ["--config", MLP, *LONG, "log.interval=5", f"log.dir={tmp_path}", "log.run_name=r"]
    code, out, after = stopped_by(signal.SIGINT, cmd, tmp_path, "r/events.out.tfevents.*", leftovers)
    assert code == 130, out[-3000:]
    assert len(after) <= 3 and any("stop requested: checkpointed step" in line for line in after), after
    held = list((tmp_path / "launcher-logs").glob("torchrun-*.log"))
    assert "SignalException" in held[0].read_text() and "Traceback" not in out


def test_sigterm_to_a_sweep_stops_its_point_and_runs_no_other(tmp_path, leftovers):
    cmd = [sys.executable, "-m", "launch", "sweep", "--framework", "torch", "--workers", "1", "--repeats", "2"]
    cmd += ["--steps", "100000", "--out", str(tmp_path), "--config", MLP, "data.dataset=synthetic", "log.interval=5"]
    code, out, _ = stopped_by(signal.SIGTERM, cmd, tmp_path, "runs/*/events.out.tfevents.*", leftovers)
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert "sweep stopped by SIGTERM after 1 point(s)" in out
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()] == ["torch-w1-r0"]


def test_sigterm_to_compare_stops_its_framework_and_starts_no_other(tmp_path, leftovers):
    cmd = [sys.executable, "-m", "launch", "compare", "--out", str(tmp_path), "--config", MLP, *LONG, "log.interval=5"]
    code, out, _ = stopped_by(signal.SIGTERM, cmd, tmp_path, "runs/*/events.out.tfevents.*", leftovers)
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert "compare stopped by SIGTERM after 1 point(s)" in out
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()] == ["torch-mlp-r0"]


def test_a_collective_with_a_dead_peer_fails_within_the_timeout(tmp_path):
    """Without a launcher to stop them, survivors fail on their own: the peer's socket closes, or
    dist.timeout runs out."""
    port = 29000 + os.getpid() % 1000
    envs = [
        {
            "RANK": str(r),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(r),
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        for r in range(2)
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch_dist.train",
        "--config",
        MLP,
        *LONG,
        f"log.dir={tmp_path}",
        "log.run_name=r",
        "dist.timeout=20",
    ]
    procs = [
        subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env={**os.environ, **ONE_THREAD, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for env in envs
    ]
    try:
        _wait_for(lambda: list((tmp_path / "r").glob("events.out.tfevents.*")), 300, "training to start", 0.2)
        procs[1].kill()
        killed = time.monotonic()
        procs[0].communicate(timeout=120)
        assert procs[0].returncode != 0 and time.monotonic() - killed < 60
    finally:
        for p in procs:
            p.kill()
            p.wait()


# torchrun's static rendezvous keeps one store across restarts: each attempt's keys stay apart (pytorch#135712)
@pytest.mark.parametrize("framework,launcher", [("torch", "torchrun"), ("torch", "local"), ("tf", "local")])
def test_restart_resumes_from_the_checkpoint_without_loss(tmp_path, framework, launcher):
    common = [
        "data.dataset=synthetic",
        "data.limit=12000",
        "train.epochs=3",
        "train.threads=1",
        "model.name=cnn",
        "log.progress=never",
        f"log.dir={tmp_path}",
    ]  # the CNN: slow enough to hit
    cmd = [
        sys.executable,
        "-m",
        "launch",
        "run",
        "--framework",
        framework,
        "--launcher",
        launcher,
        "--nproc",
        "2",
        "--max-restarts",
        "1",
        "--config",
        MLP,
        *common,
        "log.run_name=r",
    ]
    job = start(cmd, tmp_path)
    try:
        # kill rank 1 in the middle of epoch 2, after the first checkpoint
        _wait_for(lambda: list((tmp_path / "r" / "checkpoints").glob("*")), 300, "the first checkpoint", 0.1)
        victim = _wait_for(lambda: rank_pid(str(tmp_path), 1), 30, "rank 1's pid", 0.1)
        os.kill(victim, signal.SIGKILL)
        out, _ = job.communicate(timeout=900)
    finally:
        end(job, tmp_path)
    assert job.returncode == 0, out[-3000:]
    assert "resuming from" in out
    summary = read_json(tmp_path / "r" / "summary.json")
    assert summary["steps"] == 3 * 47 and summary["restarts"] == 1  # 12000 / 2 / 128 = 47 steps an epoch
    assert [s for s, _ in read_scalars(tmp_path / "r")["eval/accuracy"]][-1] == 3 * 47


@pytest.mark.parametrize("module", ["torch_dist.train", "tf_dist.train"])
def test_a_mid_epoch_stop_resumes_at_the_next_batch(tmp_path, module):
    """A stop requested before the run starts is taken at the first interval (step 10 of a 63-step
    epoch); the resumed run must train exactly the batches an uninterrupted run trains."""
    common = [
        "data.dataset=synthetic",
        "data.limit=4000",
        "train.batch_size=64",
        "train.epochs=2",
        "train.optimizer=sgd",
        "train.lr=0.05",
        "log.interval=10",
        "train.threads=1",
        "log.progress=never",
        f"log.dir={tmp_path}",
    ]
    whole = run(train_cmd(module, "single", 1, [*common, "log.run_name=whole"]), cwd=tmp_path, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "PREEMPT").touch()
    stopped = run(train_cmd(module, "single", 1, [*common, "log.run_name=cut"]), cwd=tmp_path, timeout=300)
    assert stopped.returncode == 75 and "stop requested: checkpointed step 10" in stopped.stdout, stopped.stderr[-3000:]
    resumed = run(
        train_cmd(module, "single", 1, [*common, "log.run_name=cut", "checkpoint.resume=true"]),
        cwd=tmp_path,
        timeout=300,
    )
    assert resumed.returncode == 0 and "(in epoch 1, step 10, sample 640 of 4000)" in resumed.stdout, resumed.stderr[
        -3000:
    ]
    a, b = (read_json(tmp_path / name / "history.json")["epochs"] for name in ("whole", "cut"))
    assert [e["step"] for e in a] == [e["step"] for e in b] == [63, 126]
    assert b[-1]["eval_loss"] == pytest.approx(a[-1]["eval_loss"], rel=1e-5)  # the same weights at the end


def test_a_checkpoint_killed_mid_write_leaves_the_previous_one_usable(tmp_path):
    from launch.outputs.checkpoints import latest as latest_checkpoint
    from torch_dist.checkpoint import load_checkpoint

    writer = (
        "import sys, torch\n"
        "from torch_dist.checkpoint import save_checkpoint, checkpoint_path\n"
        "from torch_dist.models import build_model\n"
        "folder = __import__('pathlib').Path(sys.argv[1])\n"
        "model = build_model('mlp'); opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "save_checkpoint(checkpoint_path(folder, 10), model=model, optimizer=opt, model_name='mlp',"
        " progress={'step': 10})\n"
        "print('first', flush=True)\n"
        "big = [{'w': torch.zeros(50_000_000)} for _ in range(8)]  # ~1.6 GB: slow to write\n"
        "save_checkpoint(checkpoint_path(folder, 20), model=model, optimizer=opt, model_name='mlp',"
        " progress={'step': 20, 'history': big})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "first"
        _wait_for(
            lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".step-00000020")],
            60,
            "the second checkpoint's temp file",
            0.01,
        )
        proc.kill()
    finally:
        proc.wait()
    assert not (tmp_path / "step-00000020.pt").exists()
    latest = latest_checkpoint(tmp_path, "torch")
    assert latest == tmp_path / "step-00000010.pt"
    assert load_checkpoint(latest, "mlp")["progress"]["step"] == 10


# --- hostile and broken input: a clear message, the exit code, nothing overwritten ---------------


def trainer(tmp_path, module, *overrides, env=None):
    return run(
        [sys.executable, "-m", module, "--config", MLP, f"log.dir={tmp_path}", "log.progress=never", *overrides],
        cwd=tmp_path,
        timeout=300,
        env=env,
    )


def last_line(out) -> str:
    return out.stderr.strip().splitlines()[-1]


def test_corrupt_data_file_is_named(tmp_path):
    from helpers import fake_mnist, idx_files, write_files

    files = idx_files(fake_mnist())
    files["train-images-idx3-ubyte.gz"] = files["train-images-idx3-ubyte.gz"][:-100]
    folder = write_files(tmp_path / "data", files)
    out = trainer(tmp_path, "torch_dist.train", "data.dataset=mnist", f"data.dir={folder}")
    assert out.returncode == 3
    assert "train-images-idx3-ubyte.gz: corrupt or truncated gzip data" in last_line(out)


def test_under_plain_torchrun_the_failed_rank_s_line_ends_its_failure_summary(tmp_path):
    """torchrun ends with its own traceback and failure summary: the summary's root cause shows the
    rank's one line (from TORCHELASTIC_ERROR_FILE) where it would otherwise link to torch's docs."""
    (tmp_path / "empty").mkdir()
    overrides = [f"log.dir={tmp_path}", "data.dataset=mnist", f"data.dir={tmp_path / 'empty'}"]
    out = run(train_cmd("torch_dist.train", "torchrun", 2, overrides), cwd=tmp_path, timeout=120)
    assert out.returncode != 0
    root_cause = out.stderr[out.stderr.index("Root Cause (first observed failure)") :]
    line = next(line for line in root_cause.splitlines() if "traceback :" in line).split("traceback :", 1)[1]
    assert re.fullmatch(
        rf"torch_dist\.train: error: rank \d on \S+: mnist not found \(looked in: {tmp_path}/empty\).*", line.strip()
    )
    assert "data.dir" in line and "To enable traceback see" not in out.stderr


def test_wrong_checksum_download_exit_code(tmp_path, monkeypatch, capsys):
    from launch.cli import main as cli
    from launch.data import datasets as data

    from helpers import Mirror, fake_mnist, idx_files

    files = idx_files(fake_mnist())
    with Mirror(files) as mirror:
        monkeypatch.setitem(data.MIRRORS, "mnist", [mirror.url])
        monkeypatch.setitem(data.CHECKSUMS, "mnist", dict.fromkeys(files, "0" * 64))
        monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "none"))
        with pytest.raises(SystemExit) as exit_:
            cli.main(["data", "--dataset", "mnist", "--dir", str(tmp_path / "d")])
    assert exit_.value.code == 3
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert not list((tmp_path / "d").glob("*.gz")) and not list((tmp_path / "d").glob("*.lock"))


def test_checkpoint_from_another_framework_is_refused(tmp_path):
    first = trainer(
        tmp_path, "torch_dist.train", "data.dataset=synthetic", "data.limit=1000", "train.epochs=1", "log.run_name=r"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    out = trainer(
        tmp_path,
        "tf_dist.train",
        "data.dataset=synthetic",
        "data.limit=1000",
        "train.epochs=2",
        "log.run_name=r",
        "checkpoint.resume=true",
    )
    assert out.returncode == 1 and "holds torch checkpoints, which tf cannot resume" in last_line(out)


def test_checkpoint_with_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / "step-00000001.pt").write_bytes(pickle.dumps(Evil()))
    out = trainer(tmp_path, "torch_dist.train", "data.dataset=synthetic", "log.run_name=r", "checkpoint.resume=true")
    assert out.returncode == 1 and "not a loadable torch_dist checkpoint" in last_line(out)
    assert not marker.exists()


def test_finished_run_is_never_overwritten_unless_asked(tmp_path):
    args = ["data.dataset=synthetic", "data.limit=1000", "train.epochs=1", "log.run_name=r"]
    assert trainer(tmp_path, "torch_dist.train", *args).returncode == 0
    before = (tmp_path / "r" / "summary.json").read_bytes()
    out = trainer(tmp_path, "torch_dist.train", *args)
    assert out.returncode == 1 and "already holds a finished run" in last_line(out)
    assert (tmp_path / "r" / "summary.json").read_bytes() == before
    again = trainer(tmp_path, "torch_dist.train", *args, "train.epochs=2", "log.overwrite=true")
    assert again.returncode == 0 and read_json(tmp_path / "r" / "summary.json")["epochs"] == 2
    assert len(list((tmp_path / "r").glob("events.out.tfevents.*"))) == 1  # the old run's events are gone


@pytest.mark.parametrize("module", ["torch_dist.train", "tf_dist.train"])
def test_nan_loss_stops_with_the_step(tmp_path, module):
    out = trainer(
        tmp_path,
        module,
        "data.dataset=synthetic",
        "data.limit=2000",
        "train.optimizer=sgd",
        "train.lr=1e30",
        "log.interval=5",
        "log.run_name=n",
    )
    assert out.returncode == 1
    assert "the training loss became NaN or infinite between steps 0 and 5: lower train.lr" in last_line(out)


def test_yaml_that_is_not_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    out = run(
        [sys.executable, "-m", "tf_dist.train", "--config", str(tmp_path / "list.yaml")], cwd=tmp_path, timeout=300
    )
    assert out.returncode == 2 and "must be a mapping of sections" in last_line(out)


def test_world_larger_than_the_dataset(tmp_path):
    out = run(
        train_cmd("torch_dist.train", "torchrun", 2, [f"log.dir={tmp_path}", "data.dataset=synthetic", "data.limit=1"]),
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode != 0
    assert "world size 2 is larger than the training set (1 samples)" in out.stderr


# --- exit hygiene --------------------------------------------------------------------------------


LEAVES = """
from launch import log
from launch.run import worker
log.setup("t")
log.get().info("logged last")
print("printed last", end="")  # no newline, and stdout is a pipe: still in the buffer
worker.leave(3)
"""


def test_a_rank_leaves_with_its_code_and_nothing_unwritten():
    """A rank skips the interpreter's teardown (worker.leave), but not what it still had to write."""
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run(
        [sys.executable, "-c", LEAVES], capture_output=True, text=True, timeout=60, cwd=ROOT, env=buffered
    )
    assert out.returncode == 3, out.stderr
    assert "t: logged last" in out.stdout + out.stderr and out.stdout.endswith("printed last")


@pytest.mark.parametrize("framework,runs", [("torch", 8), ("tf", 6)])
def test_exit_hygiene_over_many_runs(tmp_path, framework, runs, leftovers):
    """Short runs back to back, two at a time (one run's start-up overlaps the other's training): each
    exits 0 without an abort, leaves nothing alive, so no port it opened is held, and no file in its
    temp dir (AutoGraph's generated modules among them). Every other test's runs get the process
    check too (conftest.py `leftovers`): several hundred runs a suite."""
    launcher = "torchrun" if framework == "torch" else "local"

    def one(i: int) -> tuple[Path, subprocess.CompletedProcess]:
        log_dir = tmp_path / f"r{i:02d}"  # one width: no run's folder is a prefix of another's
        cmd = [sys.executable, "-m", "launch", "run", "--framework", framework, "--launcher", launcher]
        cmd += ["--nproc", "2", "--config", MLP, "data.dataset=synthetic", "data.limit=512", "train.epochs=1"]
        cmd += ["train.batch_size=64", "train.threads=1", "checkpoint.interval=0", "log.progress=never"]
        (log_dir / "tmp").mkdir(parents=True)
        env = {"TMPDIR": str(log_dir / "tmp")}
        return log_dir, run([*cmd, f"log.dir={log_dir}", "log.run_name=r"], cwd=tmp_path, timeout=300, env=env)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for i, (log_dir, out) in enumerate(pool.map(one, range(runs))):
            assert out.returncode == 0, f"run {i}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
            assert "terminate called" not in out.stdout + out.stderr and "SIGABRT" not in out.stdout + out.stderr
            assert not live_pids_mentioning(f"{log_dir}"), f"run {i} left a process behind"
            assert (log_dir / "r" / "summary.json").is_file()
            assert list((log_dir / "tmp").iterdir()) == [], f"run {i} left temp files"
    left = leftovers()
    assert not left, f"left running: {Leftovers.describe(left)}"


LEAVES_A_PROCESS = """
import subprocess, sys
def test_leaves():  # a session of its own: out of reach of a kill of the test's children
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", {mark!r}], start_new_session=True)
"""


def test_a_test_that_leaves_a_process_running_fails_and_the_process_is_ended(tmp_path):
    """The suite's own exit check (conftest.py `leftovers`), run on a test that leaves one process."""
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(ROOT / "tests" / name, tmp_path)
    (tmp_path / "test_leaves.py").write_text(LEAVES_A_PROCESS.format(mark=str(tmp_path)))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-o", "addopts=", "-q"]
    out = run([*cmd, "test_leaves.py"], cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out.stdout[-3000:]
    assert "test_leaves.py::test_leaves left 1 process(es) running" in out.stdout, out.stdout[-3000:]
    assert not live_pids_mentioning(str(tmp_path))
