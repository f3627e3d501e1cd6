"""What a run records of itself outside the framework: one EpochRecord per epoch (history.json and
history.png) and the summary built from every rank's final numbers (summary.json)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from launch import models
from launch.clock import process_start
from launch.cluster.environment import cpu_model, launch_variables, tool_versions
from launch.cluster.peak import run_peak
from launch.cluster.world import World
from launch.config import Config
from launch.outputs.plots import pyplot, save_png
from launch.outputs.summary import Summary, versions
from launch.run.comm import Rows
from launch.run.metrics import combine_rates
from launch.run.stragglers import SPLIT


@dataclass
class EpochRecord:
    epoch: int  # 1-based: the number of epochs completed
    step: int
    train_loss: float
    train_accuracy: float
    eval_loss: float
    eval_accuracy: float
    wall_s: float  # seconds from process start to the end of this epoch's evaluation


def history_to_dicts(history: list[EpochRecord]) -> list[dict]:
    return [asdict(r) for r in history]


def history_from_dicts(rows: list[dict]) -> list[EpochRecord]:
    return [EpochRecord(**row) for row in rows]


def plot_history(history: list[EpochRecord], path: Path, title: str) -> None:
    """Training and evaluation accuracy and loss per epoch, as a PNG."""
    plt = pyplot()
    epochs = [r.epoch for r in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in ((acc, "accuracy"), (loss, "loss")):
        ax.plot(epochs, [getattr(r, f"train_{name}") for r in history], "o-", label="train")
        ax.plot(epochs, [getattr(r, f"eval_{name}") for r in history], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)


@dataclass(frozen=True)
class RunFacts:
    """What the loop knows of the run at its end, besides the config and the world."""

    framework: str
    backend: str
    device: str
    global_batch_size: int
    steps: int
    history: list[EpochRecord]
    first_step_at: float  # time.time() at the end of this process's first step
    dropped_per_epoch: int
    world_size_history: list[dict]
    framework_versions: dict
    run_id: str
    data: dict  # launch.data.datasets.Dataset.info()
    hosts: list[str]  # every rank's host name, in rank order
    interfaces: list[str]  # every rank's network interface towards the master


def rank_table(final: Rows, hosts: list[str], interfaces: list[str]) -> list[dict]:
    """One row per rank: its host and interface, the CPUs it may run on, its threads, its own images/s,
    the cores its process kept busy in its measured steps (CPU seconds per second, every thread) and
    its steps' split into compute, collective and data (ms per step, warm-up included)."""
    return [
        {
            "rank": r,
            "host": host,
            "interface": interfaces[r],
            "cpus": int(final["cpus"][r]),
            "threads": int(final["threads"][r]),
            "images_per_sec": float(final["images"][r] / final["seconds"][r]) if final["seconds"][r] else 0.0,
            "busy_cores": float(final["cpu_seconds"][r] / final["seconds"][r]) if final["seconds"][r] else 0.0,
            **{f"{name}_ms": float(final[name][r] / max(final["split_steps"][r], 1) * 1000) for name in SPLIT},
        }
        for r, host in enumerate(hosts)
    ]


def make_summary(config: Config, world: World, facts: RunFacts, final: Rows, model_size_bytes: int) -> Summary:
    """The run's summary from every rank's final row (launch.run.loop: its measured images, seconds and steps, peak RSS, CPUs, threads and split) and the chief's records."""
    rates = combine_rates(final["images"], final["seconds"], final["steps"])
    last, start = facts.history[-1], process_start()
    ranks = rank_table(final, facts.hosts, facts.interfaces)
    peak = _peak(config, facts, ranks)
    flops_per_image = models.training_flops_per_image(config.model.name)
    return Summary(
        framework=facts.framework,
        backend=facts.backend,
        model=config.model.name,
        dataset=config.data.dataset,
        world_size=world.size,
        num_nodes=world.num_nodes,
        device=facts.device,
        precision=config.train.precision,
        batch_size_per_worker=config.train.batch_size,
        global_batch_size=facts.global_batch_size,
        lr=config.scaled_lr(world.size),
        epochs=last.epoch,
        steps=facts.steps,
        final_eval_accuracy=last.eval_accuracy,
        final_eval_loss=last.eval_loss,
        images_per_sec=rates.images_per_sec,
        images_per_sec_per_worker=rates.images_per_sec_per_worker,
        step_ms=rates.step_ms,
        warmup_steps=config.train.warmup_steps,
        peak_rss_bytes_max=int(final["peak_rss"].max()),
        peak_rss_bytes_mean=float(final["peak_rss"].mean()),
        model_size_bytes=model_size_bytes,
        wall_time_s=time.time() - start,
        startup_s=facts.first_step_at - start,
        dropped_per_epoch=facts.dropped_per_epoch,
        restarts=world.restarts,
        launcher=world.started_by,
        world_size_history=facts.world_size_history,
        compression=config.dist.compression,
        accumulate_steps=config.train.accumulate_steps,
        tf32=config.train.tf32,
        versions=versions(**facts.framework_versions, **tool_versions()),
        run_id=facts.run_id,
        data=facts.data,
        ranks=ranks,
        environment={"variables": launch_variables(), "cpu": cpu_model(), "nodes": list(dict.fromkeys(facts.hosts))},
        parameters=models.parameters(config.model.name),
        flops_per_image=flops_per_image,
        peak=peak,
        fraction_of_peak=rates.images_per_sec * flops_per_image / peak["flops_per_s"] if peak["flops_per_s"] else 0.0,
    )


def _peak(config: Config, facts: RunFacts, ranks: list[dict]) -> dict:
    """On CPUs, the cores the ranks' threads could use: per host, their threads up to its CPUs; on
    GPUs, one per replica (several per process under TensorFlow's MirroredStrategy)."""
    if facts.device == "cpu":
        hosts = {r["host"]: 0 for r in ranks}
        for r in ranks:
            hosts[r["host"]] = min(r["cpus"], hosts[r["host"]] + r["threads"])
        return run_peak("cpu", config.train.precision, config.train.tf32, sum(hosts.values()))
    replicas = facts.global_batch_size // (config.train.batch_size * config.train.accumulate_steps)
    return run_peak(facts.device, config.train.precision, config.train.tf32, replicas)
