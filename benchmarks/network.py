"""Scaling across two hosts on shaped links: `python benchmarks/network.py [--quick] [--out DIR]`.

Needs root: it makes its own testbed of network namespaces (launch/testbed/hosts.py) and removes it. For
each network profile (loopback: unshaped veth; 10g; 1g: tc tbf, bandwidth only), 2 hosts x 1 worker,
MLP and CNN, torch and tf, each communication option: images/s, the step time, and the scaling
efficiency against 1 worker of the same framework and model with no option (one worker uses no
network, so one reference serves every profile). Then each option's test accuracy after --epochs
epochs of Fashion-MNIST on 2 hosts (unshaped: a link changes time, not arithmetic), the mean over
--seeds seeds (one run's accuracy moves by ~0.5 points with the seed alone); an option that costs
more than 0.5 points against plain DDP / plain MultiWorkerMirroredStrategy is flagged.

Both hosts share this machine's cores: compare ratios, never absolute figures, across machines.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from launch.config import load_config
from launch.experiments.sweep import PointJob, run_on_hosts
from launch.outputs.summary import Summary
from launch.testbed.hosts import PROFILES, Testbed, missing_tools

ROOT = Path(__file__).resolve().parent.parent


def accumulate(k: int) -> list[str]:
    """k micro-batches per optimizer step, with the lr raised k-fold as the global batch was (the linear
    rule; both configs train at the same lr): with the configs' lr, k-fold fewer steps cost accuracy."""
    return [f"train.accumulate_steps={k}", f"train.lr={k * load_config(str(ROOT / 'configs/mlp.yaml')).train.lr:g}"]


OPTIONS = {  # what each framework offers against a slow link (docs/slow-links.md)
    "torch": {
        "plain": [],
        "fp16": ["dist.compression=fp16"],
        "powersgd": ["dist.compression=powersgd", "dist.powersgd_rank=2", "dist.powersgd_start=10"],
        "accumulate 2": accumulate(2),
        "accumulate 4": accumulate(4),
    },
    "tf": {"plain": [], "accumulate 4": accumulate(4)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, 1 repeat, 1 epoch (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every point (medians)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the accuracy runs (0: none)")
    parser.add_argument("--seeds", type=int, default=3, help="accuracy runs per option (train.seed 0..N-1): the mean")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--profiles", default="loopback,10g,1g")
    parser.add_argument("--out", help="folder for network.csv and network.png (default: a temporary one)")
    args = parser.parse_args()
    why = missing_tools()
    if why:
        raise SystemExit(f"benchmarks/network.py: {why}")
    os.environ.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # for every run on the hosts
    out = Path(args.out or tempfile.mkdtemp(prefix="mnist-dist-network-"))
    out.mkdir(parents=True, exist_ok=True)
    models, profiles = args.models.split(","), args.profiles.split(",")
    epochs = min(args.epochs, 1) if args.quick else args.epochs
    bed = Testbed.up(2)
    try:
        rows, links = throughput(bed, out, models, profiles, args.quick, 1 if args.quick else args.repeats)
        accuracy = accuracies(bed, out, models, epochs, 1 if args.quick else args.seeds) if epochs else {}
    finally:
        bed.down()
    write_csv(out / "network.csv", rows)
    plot(out / "network.png", rows)
    print(report(rows, links, accuracy, epochs))
    print(f"\n(CSV and plot in {out})")


def throughput(bed: Testbed, out: Path, models: list[str], profiles: list[str], quick: bool, repeats: int):
    """Every point once per repeat, in turn (profiles inside repeats: a noisy minute hits them all);
    medians. One worker uses no network, so one reference per framework and model serves every profile."""
    runs, refs, links = collections.defaultdict(list), collections.defaultdict(list), collections.defaultdict(list)
    for r in range(repeats):
        for profile in profiles:
            bed.shape(PROFILES[profile])
            links[profile].append(bed.link_gbit())
            for model in models:
                for framework, options in OPTIONS.items():
                    for option, overrides in options.items():
                        name = f"{framework}-{model}-{option.replace(' ', '')}-{profile}-r{r}"
                        runs[(profile, model, framework, option)].append(
                            on_hosts(
                                bed, out, 2, profile, framework, name, [*throughput_args(model, quick), *overrides]
                            )
                        )
        bed.shape(None)
        for model in models:
            for framework in OPTIONS:
                refs[(model, framework)].append(
                    on_hosts(
                        bed,
                        out,
                        1,
                        "loopback",
                        framework,
                        f"{framework}-{model}-w1-r{r}",
                        throughput_args(model, quick),
                    )
                )
    rows = []
    for (profile, model, framework, option), summaries in runs.items():
        rate, step_ms = (statistics.median(getattr(s, key) for s in summaries) for key in ("images_per_sec", "step_ms"))
        one_rate, one_step_ms = (
            statistics.median(getattr(s, key) for s in refs[(model, framework)])
            for key in ("images_per_sec", "step_ms")
        )
        accumulate = summaries[0].accumulate_steps  # a step trains that many one-worker batches
        rows.append(
            {
                "profile": profile,
                "model": model,
                "framework": framework,
                "option": option,
                "images_per_sec": rate,
                "step_ms": step_ms,
                "one_worker_images_per_sec": one_rate,
                "one_worker_step_ms": one_step_ms,
                "comm_ms": step_ms - accumulate * one_step_ms,
                "efficiency": rate / (2 * one_rate),
                "repeats": len(summaries),
            }
        )
    return rows, {profile: statistics.median(gbit) for profile, gbit in links.items()}


def throughput_args(model: str, quick: bool) -> list[str]:
    steps = (40 if quick else 100) if model == "cnn" else (150 if quick else 400)
    return [
        f"configs/{model}.yaml",
        "data.dataset=synthetic",
        "train.batch_size=128",
        "train.threads=1",
        "train.warmup_steps=20",
        f"train.max_steps={20 + steps}",
        "train.epochs=1000",
        "checkpoint.interval=0",
        "log.interval=100000",
    ]


def accuracies(bed: Testbed, out: Path, models: list[str], epochs: int, seeds: int) -> dict:
    """(model, framework, option) -> the test accuracy of each seed."""
    found = collections.defaultdict(list)
    for seed in range(seeds):
        for model in models:
            for framework, options in OPTIONS.items():
                for option, overrides in options.items():
                    name = f"acc-{framework}-{model}-{option.replace(' ', '')}-s{seed}"
                    summary = on_hosts(
                        bed,
                        out,
                        2,
                        "loopback",
                        framework,
                        name,
                        [
                            f"configs/{model}.yaml",
                            "data.dataset=fashion-mnist",
                            f"train.epochs={epochs}",
                            "train.threads=1",
                            f"train.seed={seed}",
                            *overrides,
                        ],
                    )
                    found[(model, framework, option)].append(summary.final_eval_accuracy)
    return found


def on_hosts(bed: Testbed, out: Path, hosts: int, profile: str, framework: str, name: str, args: list[str]) -> Summary:
    """One training on the first `hosts` hosts, one worker each (as `sweep --testbed` runs its points)."""
    config, *overrides = args
    point = run_on_hosts(
        bed, profile, PointJob(framework, hosts, name, out / "runs", "local", str(ROOT / config), tuple(overrides))
    )
    if not point.ok:
        raise SystemExit(f"{name} failed (exit code {point.exit_code}); its logs: {out / 'runs'}")
    return point.summary


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(path: Path, rows: list[dict]) -> None:
    """Efficiency per profile: one line per (model, framework, option)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        for framework, options in OPTIONS.items():
            for option in options:
                points = {
                    r["profile"]: r["efficiency"]
                    for r in rows
                    if (r["model"], r["framework"], r["option"]) == (model, framework, option)
                }
                ax.plot(
                    profiles,
                    [points.get(p) for p in profiles],
                    "o-" if framework == "torch" else "s--",
                    label=f"{framework} {option}",
                )
        ax.set_title(f"{model}: 2 hosts x 1 worker")
        ax.set_xlabel("network profile")
        ax.set_ylabel("scaling efficiency vs 1 worker")
        ax.set_ylim(0, max(1.0, max(r["efficiency"] for r in rows) * 1.1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(rows: list[dict], links: dict, accuracy: dict, epochs: int) -> str:
    import tensorflow as tf
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    lines = [
        "### Scaling across two hosts on shaped links (2 hosts x 1 worker, 1 thread each)\n",
        f"Hardware: {cpu}, {os.cpu_count()} cores, both hosts on this machine. torch {torch.__version__}, "
        f"tensorflow {tf.__version__}. Measured TCP between the hosts: "
        + ", ".join(f"{p} {g:.2f} Gbit/s" for p, g in links.items())
        + ".\n",
        f"Synthetic data, batch 128 per worker, warm-up excluded, medians of {rows[0]['repeats']} interleaved "
        "repeats. Efficiency: 2-host img/s / (2 x one worker's, same framework and model, no option). comm ms: "
        "2-host step time minus the one-worker compute it holds (accumulate k: k batches). vs plain: the "
        "efficiency over plain's, same framework, model and profile.\n",
        "| model | framework | option | profile | img/s | step ms | comm ms | efficiency | vs plain |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    plain = {(r["profile"], r["model"], r["framework"]): r["efficiency"] for r in rows if r["option"] == "plain"}
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['framework']} | {r['option']} | {r['profile']} | {r['images_per_sec']:,.0f} "
            f"| {r['step_ms']:.2f} | {r['comm_ms']:.2f} | {r['efficiency']:.2f} "
            f"| {r['efficiency'] / plain[(r['profile'], r['model'], r['framework'])]:.2f}x |"
        )
    if accuracy:
        seeds = len(next(iter(accuracy.values())))
        lines += [
            "",
            f"Test accuracy after {epochs} epoch(s) of Fashion-MNIST, 2 hosts (unshaped), mean ± sd over "
            f"{seeds} seed(s):\n",
            "| model | framework | option | accuracy | vs plain (points) |",
            "|---|---|---|---:|---:|",
        ]
        for (model, framework, option), accs in accuracy.items():
            mean = statistics.fmean(accs)
            delta = 100 * (mean - statistics.fmean(accuracy[(model, framework, "plain")]))
            flag = " **costs > 0.5**" if delta < -0.5 else ""
            sd = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
            lines.append(f"| {model} | {framework} | {option} | {mean:.4f}{sd} | {delta:+.2f}{flag} |")
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"({time.time() - started:.0f} s)")
