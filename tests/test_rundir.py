"""Run directory naming and creation, and summary.json's schema."""

import dataclasses
import json

import pytest

from launch.cluster.world import World
from launch.config import load_config
from launch.errors import UserError
from launch.outputs.rundir import CONFIG_FILE, RUN_FILE, claim, create_run_dir, run_dir_for
from launch.outputs.summary import peak_rss_bytes, read_summary, versions, write_summary

from helpers import summary


def test_default_name_uses_job_id_else_stamp(tmp_path):
    cfg = load_config(None, [f"log.dir={tmp_path}", "data.dataset=fashion-mnist"])
    assert run_dir_for(cfg, "torch", World(size=2, job_id="77.0"), "t1").name == "torch-mlp-fashion-mnist-w2-77.0"
    assert run_dir_for(cfg, "tf", World(), "20261127-010203").name == "tf-mlp-fashion-mnist-w1-20261127-010203"
    named = load_config(None, [f"log.dir={tmp_path}", "log.run_name=mine"])
    assert run_dir_for(named, "torch", World(), "t") == tmp_path / "mine"


def test_a_resume_at_another_world_size_finds_its_job_s_run(tmp_path):
    started = tmp_path / "torch-mlp-fashion-mnist-w2-77.0"
    (started / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch-mlp-fashion-mnist-w2-78.0").mkdir()  # another job's
    resume = load_config(None, [f"log.dir={tmp_path}", "data.dataset=fashion-mnist", "checkpoint.resume=true"])
    assert run_dir_for(resume, "torch", World(size=1, job_id="77.0"), "t") == started
    assert run_dir_for(resume, "torch", World(size=1, job_id="79.0"), "t").name == "torch-mlp-fashion-mnist-w1-79.0"
    fresh = load_config(None, [f"log.dir={tmp_path}", "data.dataset=fashion-mnist"])
    assert run_dir_for(fresh, "torch", World(size=1, job_id="77.0"), "t").name == "torch-mlp-fashion-mnist-w1-77.0"


def test_claim_and_create_write_config_and_identity_and_refuse_a_finished_run(tmp_path):
    cfg = load_config(None, [f"log.dir={tmp_path}", "log.run_name=r", "train.epochs=2"])
    first = claim(cfg, "torch", World(), "t", None)
    create_run_dir(cfg, first.run_dir, {"id": "00000000abcd"})
    first.lock.release()
    assert load_config(first.run_dir / CONFIG_FILE) == cfg
    assert json.loads((first.run_dir / RUN_FILE).read_text()) == {"id": "00000000abcd"}
    write_summary(first.run_dir, summary(model_size_bytes=3))
    (first.run_dir / "model.pt").write_bytes(b"abc")
    with pytest.raises(UserError, match="already holds a finished run"):
        claim(cfg, "torch", World(), "t", None)
    resumed = load_config(None, [f"log.dir={tmp_path}", "log.run_name=r", "checkpoint.resume=true"])
    again = claim(resumed, "torch", World(), "t", None)  # resuming a finished run is allowed: it says so
    again.lock.release()
    assert again.finished and again.run_id == 0xABCD


def test_summary_round_trip(tmp_path):
    path = write_summary(tmp_path, summary())
    assert read_summary(path) == summary()
    assert json.loads(path.read_text())["schema_version"] == 1


def test_summary_with_missing_field_is_refused(tmp_path):
    data = dataclasses.asdict(summary())
    del data["steps"]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"missing \['steps'\]"):
        read_summary(tmp_path / "summary.json")


def test_peak_rss_is_plausible():
    assert 10_000_000 < peak_rss_bytes() < 20_000_000_000


def test_the_hardware_line_names_each_run_s_gpu_and_tf32_mode():
    from launch.experiments.header import hardware

    h200 = versions(torch="2.13.0", gpu="NVIDIA H200", cuda="12.8", nccl="2.27.3")
    runs = [summary(device="cuda", versions=h200), summary(framework="tf", device="gpu", versions=h200, tf32=True)]
    line = hardware(runs)
    assert line.endswith("cores; GPU NVIDIA H200, TF32 off; GPU NVIDIA H200, TF32 on"), line
    assert hardware([summary()]) == hardware()  # CPU runs: the CPU only
