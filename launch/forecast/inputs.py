"""A forecast's inputs, each with where it came from: measured (which file), stated (which option),
or a default (and why). From run directories' summary.json (a 1-worker run gives the compute; a
run of several workers also gives its collective, from which the link it crossed is calibrated),
an allocation's doctor.json (the links between its nodes), and what the user states.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from launch.errors import UserError
from launch.forecast.model import Cluster, Link, Workload
from launch.outputs.rundir import SUMMARY_FILE
from launch.outputs.summary import Summary, read_summary

GBIT = 1e9 / 8  # bytes/s
WIRE_BYTES = {"none": 4, "fp16": 2, "bf16": 2}  # per gradient element, by dist.compression
DEFAULT_LATENCY = {"inter": 10e-6, "intra": 1e-6}


@dataclass(frozen=True)
class Param:
    name: str
    value: object
    source: str  # "measured: FILE ...", "stated: --option", "default: why"


@dataclass(frozen=True)
class Stated:
    """What the user gave on the command line; None where they gave nothing."""

    name: str = "stated"
    parameters: float | None = None
    gradient_mb: float | None = None
    compute_ms: float | None = None
    batch: int | None = None
    per_node: int | None = None
    inter_gbit: float | None = None
    intra_gbit: float | None = None
    inter_latency_us: float | None = None
    intra_latency_us: float | None = None
    overlap: float | None = None
    fixed_fraction: float | None = None


@dataclass
class Calibration:
    name: str  # the framework's, or the stated model's
    work: Workload
    cluster: Cluster
    params: list[Param] = field(default_factory=list)
    peak: dict = field(default_factory=dict)  # the 1-worker run's, with its fraction_of_peak


def from_stated(stated: Stated) -> Calibration:
    """Stated hardware and model alone."""
    missing = [f"--{n}" for n in ("compute-ms", "batch") if getattr(stated, n.replace("-", "_")) is None]
    if stated.parameters is None and stated.gradient_mb is None:
        missing.append("--parameters or --gradient-mb")
    if missing:
        raise UserError(f"forecast without a run directory needs {', '.join(missing)}: or give a run's folder")
    params = [
        Param("compute per step (ms)", stated.compute_ms, "stated: --compute-ms"),
        Param("batch per worker", stated.batch, "stated: --batch"),
    ]
    gradient = _stated_gradient(stated, params)
    work = Workload(stated.compute_ms / 1000, stated.batch, gradient)
    return _finish(Calibration(stated.name, work, _cluster(stated, {}, {}, params), params), stated)


def _stated_gradient(stated: Stated, params: list[Param]) -> float:
    if stated.gradient_mb is not None:
        params.append(Param("gradient (MB)", stated.gradient_mb, "stated: --gradient-mb"))
        return stated.gradient_mb * 1e6
    params.append(Param("parameters", f"{stated.parameters:,.0f}", "stated: --parameters"))
    params.append(Param("bytes per gradient element", 4, "default: fp32 gradients"))
    return stated.parameters * 4


def from_runs(runs: list[Path], doctor: Path | None, stated: Stated) -> list[Calibration]:
    """One calibration per framework among the runs."""
    summaries = [(path, read_summary(_summary_file(path))) for path in runs]
    frameworks = dict.fromkeys(s.framework for _, s in summaries)
    links = _doctor_links(doctor) if doctor else {}
    out = []
    for framework in frameworks:
        mine = sorted(((p, s) for p, s in summaries if s.framework == framework), key=lambda ps: ps[1].world_size)
        out.append(_calibrate(framework, mine, links, stated))
    return out


def _summary_file(path: Path) -> Path:
    path = Path(path)
    found = path / SUMMARY_FILE if path.is_dir() else path
    if not found.is_file():
        raise UserError(f"{path}: no {SUMMARY_FILE}; give a finished run's folder (mnist-dist run writes it)")
    return found


def _calibrate(framework: str, runs: list[tuple[Path, Summary]], links: dict, stated: Stated) -> Calibration:
    (path, one), params = runs[0], []
    if not one.parameters:
        raise UserError(f"{path}: its summary.json predates parameter counts: rerun it, or state --parameters")
    wire = WIRE_BYTES.get(one.compression)
    if wire is None:
        raise UserError(f"{path}: dist.compression={one.compression} sends no fixed share: state --gradient-mb")
    file = f"{path}/{SUMMARY_FILE}"
    compute, _ = split_step(one)
    params += [
        Param("compute per step (ms)", round(compute * 1000, 3), f"measured: {file} step_ms, less the collective"),
        Param("batch per worker", one.batch_size_per_worker, f"measured: {file}"),
        Param("parameters", f"{one.parameters:,}", f"measured: {file}"),
        Param("bytes per gradient element", wire, f"dist.compression={one.compression} in {file}"),
    ]
    work = Workload(compute, one.batch_size_per_worker, one.parameters * wire)
    several = next(((p, s) for p, s in runs if s.world_size > 1), None)
    measured = _collective_link(work, several, stated) if several else {}
    cluster = _cluster(stated, {**links, **measured.get("inter", {})}, measured.get("intra", {}), params)
    peak = {**one.peak, "fraction_of_peak": one.fraction_of_peak, "flops_per_image": one.flops_per_image}
    return _finish(Calibration(framework, work, cluster, params, peak), stated)


def collective_share(rank: dict) -> float:
    """The part of a rank's steps its collective took, from summary.json's `ranks` row."""
    return rank["collective_ms"] / max(rank["compute_ms"] + rank["collective_ms"] + rank["data_ms"], 1e-12)


def split_step(summary: Summary) -> tuple[float, float]:
    """A run's step (warm-up excluded) split into compute and collective seconds by the ranks'
    measured shares (their split includes the warm-up, whose first steps compile and allocate)."""
    collective = statistics.median(collective_share(r) for r in summary.ranks) if summary.world_size > 1 else 0.0
    step = summary.step_ms / 1000
    return step * (1 - collective), step * collective


def _cluster(stated: Stated, inter: dict, intra: dict, params: list[Param]) -> Cluster:
    per_node = stated.per_node or intra.get("per_node") or inter.get("per_node") or 1
    where = "stated: --per-node" if stated.per_node else "measured: the calibration run" if per_node > 1 else "default"
    params.append(Param("workers per node", per_node, where))
    intra_link = _link("intra", stated, intra, params) if per_node > 1 else Link(float("inf"), 0.0)
    return Cluster(per_node, intra_link, _link("inter", stated, inter, params))


def _link(kind: str, stated: Stated, measured: dict, params: list[Param]) -> Link:
    gbit, latency_us = getattr(stated, f"{kind}_gbit"), getattr(stated, f"{kind}_latency_us")
    where = "between nodes" if kind == "inter" else "inside a node"
    if gbit is not None:
        params.append(Param(f"link {where} (Gbit/s)", gbit, f"stated: --{kind}-gbit"))
    elif "gbit" in measured:
        gbit = measured["gbit"]
        params.append(Param(f"link {where} (Gbit/s)", round(gbit, 3), measured["source"]))
    else:
        raise UserError(
            f"no link {where} measured: state --{kind}-gbit, or give a run across "
            + ("nodes or the allocation's doctor.json (--doctor)" if kind == "inter" else "several workers of one node")
        )
    if latency_us is not None:
        latency = latency_us / 1e6
        params.append(Param(f"latency {where} (µs)", latency_us, f"stated: --{kind}-latency-us"))
    elif "latency_s" in measured:
        latency = measured["latency_s"]
        params.append(Param(f"latency {where} (µs)", round(latency * 1e6, 1), measured["latency_source"]))
    else:
        latency = DEFAULT_LATENCY[kind]
        params.append(Param(f"latency {where} (µs)", latency * 1e6, f"default: typical {where}"))
    return Link(gbit * GBIT, latency)


def _doctor_links(path: Path) -> dict:
    """The median link between the allocation's nodes, from the doctor's TCP measurements."""
    file = Path(path) / "doctor.json" if Path(path).is_dir() else Path(path)
    try:
        links = json.loads(file.read_text())["links"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{file}: not a readable doctor.json ({exc}); run mnist-dist doctor on the allocation"
        ) from None
    pairs = [cell for i, row in enumerate(links) for j, cell in enumerate(row) if i != j and cell]
    if not pairs:
        return {}
    source = f"measured: {file} (median of {len(pairs)} node pairs)"
    return {
        "gbit": statistics.median(c["gbit"] for c in pairs),
        "source": source,
        "latency_s": statistics.median(c["rtt_ms"] for c in pairs) / 2000,
        "latency_source": source + ", half the round trip",
    }


def _collective_link(work: Workload, run: tuple[Path, Summary], stated: Stated) -> dict:
    """The bandwidth that makes the model's all-reduce take what the run's collective took: the
    framework's own cost of moving the gradient (library, copies, reduction) over the link it
    crossed, between nodes for a run across nodes of one worker each, else inside its one node."""
    path, summary = run
    n, nodes = summary.world_size, summary.num_nodes
    kind = "inter" if nodes > 1 else "intra"
    if nodes not in (1, n) or getattr(stated, f"{kind}_gbit") is not None:
        return {}  # several workers on each of several nodes: two links in one number; or stated
    latency_us = getattr(stated, f"{kind}_latency_us")
    latency = DEFAULT_LATENCY[kind] if latency_us is None else latency_us / 1e6
    _, seconds = split_step(summary)
    wire = seconds - 2 * (n - 1) * latency
    if wire <= 0:
        return {}
    gbit = 2 * (n - 1) / n * work.gradient_bytes / wire / GBIT
    source = f"measured: {path}/{SUMMARY_FILE}, {n} workers' collective ({seconds * 1000:.3f} ms), as one link"
    return {kind: {"gbit": gbit, "source": source, "per_node": n if nodes == 1 else 1}}


def _finish(cal: Calibration, stated: Stated) -> Calibration:
    """Overlap and the batch-independent part of compute: stated, or their defaults."""
    gamma = stated.overlap if stated.overlap is not None else 1.0
    cal.params.append(
        Param(
            "overlap γ",
            gamma,
            "stated: --overlap"
            if stated.overlap is not None
            else "default: 1, none (tf_dist reduces after the backward; DDP's one 25 MB bucket holds these gradients)",
        )
    )
    fixed = stated.fixed_fraction if stated.fixed_fraction is not None else 0.5
    cal.params.append(
        Param(
            "compute not growing with the batch",
            fixed,
            "stated: --fixed-fraction"
            if stated.fixed_fraction is not None
            else "default: half, as Pollux's fit takes it from one batch size (strong scaling only)",
        )
    )
    cal.work = replace(cal.work, overlap=gamma, fixed_s=cal.work.compute_s * fixed)
    return cal
