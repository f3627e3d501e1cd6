"""A run's results, written once by the chief at its end: the trained model, summary.json (from
every rank's final row), history.json and history.png, and the closing line."""

from __future__ import annotations

from pathlib import Path

from launch import log
from launch.atomic_files import write_json
from launch.cluster.world import World
from launch.config import Config
from launch.outputs.rundir import HISTORY_FILE
from launch.outputs.summary import write_summary
from launch.run.comm import Rows
from launch.run.engine import Engine
from launch.run.records import RunFacts, history_to_dicts, make_summary, plot_history


def write_results(config: Config, world: World, engine: Engine, run_dir: Path, facts: RunFacts, final: Rows) -> None:
    """`final`: every rank's final row (launch.run.records.make_summary reads it)."""
    model_file = engine.save_model(run_dir)
    summary = make_summary(config, world, facts, final, model_file.stat().st_size)
    write_summary(run_dir, summary)
    write_json(run_dir / HISTORY_FILE, {"epochs": history_to_dicts(facts.history)})
    title = f"{engine.framework} {config.model.name} on {config.data.dataset}, {world.size} worker(s)"
    plot_history(facts.history, run_dir / "history.png", title)
    rate = (
        f"{summary.images_per_sec:,.0f} img/s ({summary.images_per_sec_per_worker:,.0f} per worker)"
        if final.total("steps")
        else f"no throughput: every step of this start was warm-up (train.warmup_steps={summary.warmup_steps})"
    )
    log.get().info(f"done: {summary.steps} steps, test accuracy {summary.final_eval_accuracy:.4f}, {rate}; {run_dir}")
