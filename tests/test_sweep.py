"""mnist-dist sweep and compare: real runs, then the outputs checked against the runs' summaries.
The sweeps and the comparison the docs show are run as written, and checked as deeply, in
test_documented_commands.py; here: failures, refusals, verdict logic and the testbed sweep."""

import csv
import re
import subprocess
import sys

import pytest

from launch.report import Verdict, overall

from helpers import ROOT, read_json, read_scalars, run

pytestmark = pytest.mark.timeout(1200)


def mnist_dist(*args, cwd):
    return run([sys.executable, "-m", "launch", *args], cwd=cwd, timeout=1200)


def test_sweep_survives_a_failed_point_and_exits_non_zero_naming_it(tmp_path):
    # one training sample: a world of 2 is larger than the dataset, so that point fails
    out = mnist_dist(
        "sweep",
        "--framework",
        "torch",
        "--workers",
        "1,2",
        "--repeats",
        "1",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--mode",
        "strong",
        "--out",
        str(tmp_path / "s"),
        "--config",
        str(ROOT / "configs/mlp.yaml"),
        "data.dataset=synthetic",
        "data.limit=1",
        "train.batch_size=2",
        "train.threads=1",
        cwd=tmp_path,
    )
    # the sweep goes on past the failed point and writes its report, but does not exit 0
    assert out.returncode == 1, out.stderr[-3000:]
    assert "torch-w2-r0 failed" in out.stdout
    assert "sweep: 1 of 2 point(s) failed: torch-w2-r0 (exit code" in out.stderr
    rows = list(csv.DictReader(open(tmp_path / "s" / "scaling.csv")))
    assert [(r["workers"], r["runs"], r["failed"]) for r in rows] == [("1", "1", "0"), ("2", "0", "1")]
    assert "Failed points: torch-w2-r0 (exit code" in (tmp_path / "s" / "scaling.md").read_text()
    assert (tmp_path / "s" / "scaling.png").stat().st_size > 1000
    assert [s for s, _ in read_scalars(tmp_path / "s" / "tensorboard" / "torch")["scaling/images_per_sec"]] == [1]


def test_strong_scaling_needs_a_divisible_batch(tmp_path):
    out = mnist_dist(
        "sweep",
        "--workers",
        "1,3",
        "--mode",
        "strong",
        "--out",
        str(tmp_path / "s"),
        "train.batch_size=128",
        cwd=tmp_path,
    )
    assert out.returncode == 1 and "divisible by every worker count" in out.stderr


def test_a_claim_that_goes_both_ways_says_for_which_model():
    mlp, cnn = Verdict("faster", "refuted", ""), Verdict("faster", "confirmed", "")
    assert overall({"mlp": mlp, "cnn": mlp}) == "refuted"
    assert overall({"mlp": mlp, "cnn": cnn}) == "depends on the model: refuted for mlp, confirmed for cnn"


def test_compare_refuses_a_model_it_does_not_have(tmp_path):
    out = mnist_dist("compare", "--models", "mlp,resnet", "--out", str(tmp_path / "c"), cwd=tmp_path)
    assert out.returncode != 0 and "--models 'mlp,resnet': choose from mlp, cnn" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_testbed_sweep_refuses_what_it_cannot_run(tmp_path):
    for args, message in (
        (["--testbed", "2g"], "unknown network profile(s) ['2g']: use loopback, 10g, 1g"),
        (["--testbed", "1g", "--launcher", "mpirun"], "use --launcher local or torchrun"),
        (["--testbed", "1g", "--framework", "horovod"], "--testbed runs torch and tf"),
    ):
        out = mnist_dist("sweep", *args, "--out", str(tmp_path / "s"), cwd=tmp_path)
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def _netns_and_bridges() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True).stdout
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()) | {
        line.split(":")[1].strip() for line in out.splitlines()
    }


@pytest.mark.multihost
def test_sweep_across_testbed_hosts_one_curve_per_framework_and_profile(tmp_path, testbeds_removed):
    before = _netns_and_bridges()
    points = ["--testbed", "loopback,1g", "--framework", "torch,tf", "--workers", "1,2", "--repeats", "1"]
    training = ["data.dataset=synthetic", "data.limit=4000", "train.threads=1", "train.batch_size=64"]
    config = ["--config", str(ROOT / "configs/mlp.yaml")]
    out = mnist_dist(
        "sweep",
        *points,
        "--steps",
        "6",
        "--warmup",
        "2",
        "--out",
        str(tmp_path / "s"),
        *config,
        *training,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert _netns_and_bridges() == before  # the sweep's hosts, links and bridge are gone
    sweep = tmp_path / "s"
    rows = list(csv.DictReader(open(sweep / "scaling.csv")))
    assert [(r["framework"], r["profile"], r["workers"]) for r in rows] == [
        (f, p, n) for p in ("loopback", "1g") for f in ("torch", "tf") for n in ("1", "2")
    ]
    for r in rows:
        run_dir = sweep / "runs" / f"{r['framework']}-{r['profile']}-w{r['workers']}-r0"
        summary = read_json(run_dir / "summary.json")
        what = (summary["framework"], summary["world_size"], summary["num_nodes"], summary["steps"])
        assert what == (r["framework"], int(r["workers"]), int(r["workers"]), 8)
        # rank 0 ran on node1 (its hostname names the event file); rank 1 on node2, whose output has its own log
        assert [p.name.split(".")[4] for p in run_dir.glob("events.out.tfevents.*")] == ["node1"]
        assert (sweep / "runs" / f"{run_dir.name}-node2.log").exists() == (r["workers"] == "2")
        base = next(
            float(b["images_per_sec_mean"])
            for b in rows
            if (b["framework"], b["profile"], b["workers"]) == (r["framework"], r["profile"], "1")
        )
        assert float(r["efficiency"]) == pytest.approx(summary["images_per_sec"] / (int(r["workers"]) * base), abs=1e-3)
        scalars = read_scalars(sweep / "tensorboard" / f"{r['framework']}-{r['profile']}")
        assert dict(scalars["scaling/efficiency"])[int(r["workers"])] == pytest.approx(float(r["efficiency"]), abs=1e-3)
        assert dict(scalars["scaling/images_per_sec"])[int(r["workers"])] == pytest.approx(
            summary["images_per_sec"], rel=1e-4
        )
    table = (sweep / "scaling.md").read_text()
    assert "| torch | 1g | weak | 2 |" in table and "| tf | loopback | weak | 1 |" in table
    links = {p: float(g) for p, g in re.findall(r"(\w+) ([\d.]+) Gbit/s", table)}
    assert set(links) == {"loopback", "1g"} and links["1g"] < 1.05 < links["loopback"]  # tbf rate 1gbit, measured
    import matplotlib.image

    assert matplotlib.image.imread(sweep / "scaling.png").shape[1] > 400
