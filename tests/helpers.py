"""Test helpers: MNIST-format files made on the fly, and a tiny HTTP mirror on 127.0.0.1."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from launch import models
from launch.data.datasets import SPLIT_FILES
from launch.outputs.summary import Summary, versions
from launch.run.metrics import ALL_TAGS


def idx_bytes(array: np.ndarray) -> bytes:
    """An array in IDX format (unsigned bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_mnist(n_train: int = 120, n_test: int = 30, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }


def idx_files(arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, bytes]:
    """File name -> content for the four IDX files."""
    out = {}
    for role, stem in SPLIT_FILES.items():
        raw = idx_bytes(arrays[role])
        out[stem + (".gz" if gz else "")] = gzip.compress(raw) if gz else raw
    return out


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class Mirror:
    """Serves `files` at http://127.0.0.1:<port>/; names in `drop` are cut off halfway, names in
    `trickle` sent a byte at a time, without end."""

    def __init__(self, files: dict[str, bytes], drop: set[str] = frozenset(), trickle: set[str] = frozenset()):
        self.files, self.drop, self.trickle, self.requests = files, set(drop), set(trickle), []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                mirror.requests.append(name)
                content = mirror.files.get(name)
                if content is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if name in mirror.trickle:
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        while not mirror.stopped.wait(0.05):  # a byte every 50 ms, until the client leaves
                            self.wfile.write(b"x")
                            self.wfile.flush()
                    return
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content[: len(content) // 2] if name in mirror.drop else content)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.stopped = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


# --- running real trainer processes -------------------------------------------------------------

import math  # noqa: E402
import shutil  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def mpirun_prefix(n: int) -> list[str]:
    """mpirun with root and oversubscription allowed (CI runs as root on 2 cores)."""
    cmd = [shutil.which("mpirun"), "-np", str(n), "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def launch_prefix(launcher: str, n: int) -> list[str]:
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={n}"]
    if launcher == "mpirun":
        return mpirun_prefix(n) + [sys.executable]
    return [sys.executable]


def run(cmd: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion; a hang past `timeout` kills it and fails the test."""
    full_env = {**os.environ, **ONE_THREAD, **(env or {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def train_cmd(module: str, launcher: str, n: int, overrides: list[str], config: str = "configs/mlp.yaml") -> list[str]:
    return launch_prefix(launcher, n) + ["-m", module, "--config", str(ROOT / config), *overrides]


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run directory's event files, read with the EventAccumulator TensorBoard
    itself serves from: it reads torch's legacy scalars and tf.summary's tensor scalars alike (other
    plugins' summaries, HParams' for one, are not scalars)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    scalars = [tag for tag in acc.Tags()["tensors"] if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"]
    return {tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)] for tag in scalars}


def all_positive_finite(points: list[tuple[int, float]]) -> bool:
    return bool(points) and all(math.isfinite(v) and v > 0 for _, v in points)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


MODEL_FILE = {"torch": "model.pt", "tf": "model.keras"}


def check_run_dir(run_dir: Path, framework: str, world_size: int, min_accuracy: float) -> tuple[dict, dict]:
    """A finished run's directory: its summary (world, accuracy, positive measures), every
    TensorBoard tag positive and finite in the chief's one event file, config, plot and model.
    Returns the summary and the scalars."""
    summary = read_json(run_dir / "summary.json")
    assert summary["world_size"] == world_size and summary["framework"] == framework
    assert summary["tf32"] is False and "gpu" not in summary["versions"]  # train.tf32's default; no GPU here
    assert summary["final_eval_accuracy"] >= min_accuracy
    assert summary["images_per_sec"] > 0 and summary["peak_rss_bytes_max"] > 0 and summary["model_size_bytes"] > 0
    assert math.isclose(summary["images_per_sec_per_worker"], summary["images_per_sec"] / world_size, rel_tol=1e-6)
    assert summary["parameters"] == models.parameters(summary["model"])
    assert summary["flops_per_image"] == models.training_flops_per_image(summary["model"])
    assert summary["peak"]["flops_per_s"] > 0 and 0 < summary["fraction_of_peak"] < 1, summary["peak"]
    scalars = read_scalars(run_dir)
    for tag in ALL_TAGS:
        assert all_positive_finite(scalars.get(tag, [])), f"{tag}: {scalars.get(tag)}"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # only the chief writes
    assert (run_dir / "config.yaml").is_file() and (run_dir / "history.png").stat().st_size > 1000
    assert (run_dir / MODEL_FILE[framework]).is_file()
    return summary, scalars


def live_pids_mentioning(text: str) -> list[int]:
    """Processes (zombies aside) whose command line contains `text`: what a run may have left behind."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


# --- what a run trained (sample_log.py) ------------------------------------------------------------


def trained_lineage(folder: Path) -> dict[int, list[dict]]:
    """Step -> every rank's batch record, as far as the final model holds them: an attempt that resumed
    from step s replaces whatever earlier attempts trained after step s (a restart from the last
    epoch's checkpoint trains those steps again)."""
    records = [json.loads(line) for path in folder.glob("rank*.jsonl") for line in path.read_text().splitlines()]
    kept: list[dict] = []
    for attempt in sorted({r["attempt"] for r in records}):
        mine = [r for r in records if r["attempt"] == attempt]
        resumed_at = min(r["step"] for r in mine) - 1
        kept = [r for r in kept if r["step"] <= resumed_at] + mine
    lineage: dict[int, list[dict]] = {}
    for r in kept:
        lineage.setdefault(r["step"], []).append(r)
    return dict(sorted(lineage.items()))


def check_every_sample_once(folder: Path, steps: int, dropped: dict[int, int], n: int) -> None:
    """Steps 1..steps each trained once by every rank of its attempt; epoch e's samples unique, all but
    dropped[e] of the n trained."""
    lineage = trained_lineage(folder)
    assert list(lineage) == list(range(1, steps + 1))  # every step once, none missing
    for step, batch in lineage.items():
        assert sorted(r["rank"] for r in batch) == list(range(batch[0]["world_size"])), f"step {step}: {batch}"
    for epoch, expected_dropped in dropped.items():
        indices = [i for batch in lineage.values() for r in batch if r["epoch"] == epoch for i in r["indices"]]
        assert len(set(indices)) == len(indices), f"epoch {epoch}: a sample was trained twice"
        assert set(indices) <= set(range(n)) and n - len(indices) == expected_dropped, f"epoch {epoch}"


# --- the mnist-dist command in this process ---------------------------------------------------------


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`mnist-dist ARGS` run in this process (for commands that start nothing: dry runs, config,
    refusals), with the environment the subprocess tests give theirs; its exit code and output."""
    import io
    from unittest import mock

    from launch.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, ONE_THREAD),
        contextlib.chdir(cwd),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# --- what a command leaves running ------------------------------------------------------------------


def environ_of(pid: int) -> dict[str, str]:
    """The environment a process started with (empty for a zombie, or one gone meanwhile)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


TEST_ID = "MNIST_DIST_TEST_ID"


class Leftovers:
    """What a test leaves running: live processes that inherited its id (conftest.py puts it in the
    environment of each test), whatever their parent, session or name. Daemons that session fixtures
    start (Slurm's) lack it; another test worker's processes carry their own."""

    def __init__(self, test_id: str):
        self.test_id = test_id

    def __call__(self) -> list[int]:
        pids = [int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit()]
        return [pid for pid in pids if pid != os.getpid() and environ_of(pid).get(TEST_ID) == self.test_id]

    def after(self, grace: float) -> list[int]:
        """Those still alive `grace` seconds on: a process ending as the test ends is not left over."""
        deadline = time.monotonic() + grace
        while (left := self()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    @staticmethod
    def describe(pids: list[int]) -> str:
        """Each process's pid and command line, as far as it is still there to read."""
        lines = []
        for pid in pids:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                lines.append(f"{pid}: {cmdline[:200].decode(errors='replace')}")
        return "; ".join(lines)

    def kill(self) -> None:
        for pid in self():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def tensorboard_server(logdir: Path, timeout: float = 120):
    """A real `tensorboard` on a free port of 127.0.0.1, reloading every second; yields its base URL
    and always stops it."""
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1"]
        + ["--port", "0", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, said = time.monotonic() + timeout, []
        while not any("http://" in line for line in said):
            ready = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))[0]
            line = proc.stderr.readline() if ready else ""
            if not line:
                raise AssertionError(f"tensorboard did not start within {timeout}s: {''.join(said)[-2000:]}")
            said.append(line)
        yield re.search(r"(http://\S+?)/? ", next(line for line in said if "http://" in line))[1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def post_json(url: str, body: dict) -> dict:
    """A JSON POST, as TensorBoard's frontend makes it."""
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")  # the cgroup v1 cpu controller


@contextlib.contextmanager
def cpu_share(share: float, period_us: int = 10_000):
    """A cgroup whose processes together get `share` of one CPU, throttled every `period_us` (short,
    so that every few steps feel it); yields its folder. `in_group` starts a command in it. Its
    processes are ended and the group removed afterwards, also after a failure."""
    group = CGROUP_CPU / f"mnist-dist-test-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text(str(period_us))
        (group / "cpu.cfs_quota_us").write_text(str(int(share * period_us)))
        yield group
    finally:
        deadline = time.monotonic() + 30
        while (pids := (group / "cgroup.procs").read_text().split()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.1)  # polling the group until the kernel has removed its killed processes
        group.rmdir()


def in_group(group: Path, cmd: list[str]) -> list[str]:
    """`cmd`, started inside the cgroup `group` (its children stay there)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group), *cmd]


def summary(**changes):
    """A real summary.json's content, with `changes`: for reports made in-process."""
    base = dict(
        framework="torch",
        backend="gloo",
        model="mlp",
        dataset="fashion-mnist",
        world_size=2,
        num_nodes=1,
        device="cpu",
        precision="fp32",
        batch_size_per_worker=64,
        global_batch_size=128,
        lr=0.001,
        epochs=1,
        steps=469,
        final_eval_accuracy=0.84,
        final_eval_loss=0.45,
        images_per_sec=5000.0,
        images_per_sec_per_worker=2500.0,
        step_ms=25.0,
        warmup_steps=5,
        peak_rss_bytes_max=400_000_000,
        peak_rss_bytes_mean=390_000_000.0,
        model_size_bytes=410_000,
        wall_time_s=30.0,
        startup_s=3.0,
        dropped_per_epoch=0,
        versions=versions(torch="2.13.0"),
    )
    return Summary(**{**base, **changes})


def in_browser(url: str, screenshot: Path, timeout: float = 120) -> str:
    """A page as headless Chromium renders it (Debian's chromium-headless-shell: `make apt`): its
    screenshot written to `screenshot`, and its text as printed (pdftotext), shadow DOM included."""
    chromium = ["chromium-headless-shell", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"]
    shot = [*chromium, "--window-size=1800,1000", f"--screenshot={screenshot}", url]
    pdf = screenshot.with_suffix(".pdf")
    printed = [*chromium, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url]
    for cmd in (shot, printed):
        subprocess.run(cmd, capture_output=True, timeout=timeout, check=True, cwd=screenshot.parent)
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
