"""One config schema for both frameworks: YAML file + dotted command-line overrides, validated.

The schema is a tree of dataclasses; a field's metadata may carry `choices` or `positive`. Every
problem becomes a ConfigError with one line that names the key and how to fix it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launch.atomic_files import write_text
from launch.errors import ConfigError

DATASETS = ("mnist", "fashion-mnist", "synthetic")
# A run name is one folder inside log.dir: no path separators, no "." or "..", nothing a shell or
# an sbatch script would read differently.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MODELS = ("mlp", "cnn")


def _choice(default, choices):
    return field(default=default, metadata={"choices": choices})


def _positive(default):
    return field(default=default, metadata={"positive": True})


@dataclass
class ModelConfig:
    name: str = _choice("mlp", MODELS)


@dataclass
class DataConfig:
    dataset: str = _choice("mnist", DATASETS)
    dir: str | None = None  # a folder holding the files; downloads go there too
    limit: int | None = _positive(None)  # use only the first N train and N test samples
    custom: bool = False  # train on MNIST-format files that are not the dataset's published ones


@dataclass
class TrainConfig:
    epochs: int = _positive(5)
    batch_size: int = _positive(128)  # per worker
    lr: float = _positive(1e-3)  # for one worker; see lr_scaling
    lr_scaling: str = _choice("none", ("none", "linear", "sqrt"))  # rule applied with world size
    optimizer: str = _choice("adam", ("adam", "sgd"))
    momentum: float = 0.0  # sgd only
    seed: int = 0
    shuffle: bool = True  # a new permutation every epoch; off gives dataset order
    precision: str = _choice("fp32", ("fp32", "bf16", "fp16"))
    # TensorFloat-32 in fp32 matmuls and convolutions, on GPUs that have it (Ampere and later). Off,
    # fp32 is fp32 in both frameworks; their defaults differ (TensorFlow on, torch for convolutions).
    tf32: bool = False
    threads: int | None = _positive(None)  # per worker; default: cores / workers on the node
    warmup_steps: int = 5  # excluded from the throughput figures of summary.json
    max_steps: int | None = _positive(None)  # stop early after this many steps (throughput runs)
    # Gradients of this many micro-batches of batch_size are summed before one all-reduce and one
    # optimizer step: the step's loss is the mean over all of them, as one batch of k x batch_size.
    accumulate_steps: int = _positive(1)


@dataclass
class LogConfig:
    dir: str = "runs"
    run_name: str | None = None  # default: framework-model-dataset-wN-<job id or time>
    interval: int = _positive(50)  # steps between TensorBoard throughput points
    progress: str = _choice("auto", ("auto", "always", "never"))  # auto: only on a terminal
    overwrite: bool = False  # replace a run directory that holds a finished run (else refused)
    # name a rank whose own work per step (compute + data) stays above (1 + this) x the other
    # ranks' median for 3 logging intervals in a row (launch.run.stragglers)
    straggler_threshold: float = _positive(0.5)


@dataclass
class CheckpointConfig:
    dir: str | None = None  # default: <run dir>/checkpoints
    interval: int = 1  # epochs between checkpoints; 0 turns them off
    resume: bool = False  # continue from the latest checkpoint in dir


@dataclass
class DistConfig:
    backend: str = _choice("auto", ("auto", "gloo", "nccl", "horovod"))
    timeout: int = _positive(300)  # seconds a collective may wait, or a TF task stay silent, before the job fails
    # Gradients per all-reduce: torch DDP's bucket size (small buckets overlap more; CPU MLP: 0.1),
    # TensorFlow's CommunicationOptions.bytes_per_pack under MultiWorkerMirroredStrategy.
    bucket_mb: float = _positive(25.0)
    # Gradients on the wire (torch DDP communication hooks): fp16/bf16 halve the bytes; powersgd
    # sends a low-rank approximation with error feedback (after powersgd_start plain steps).
    compression: str = _choice("none", ("none", "fp16", "bf16", "powersgd"))
    powersgd_rank: int = _positive(2)  # PowerSGD's matrix approximation rank: lower sends less
    powersgd_start: int = _positive(100)  # plain all-reduce steps before PowerSGD starts
    # TensorFlow only: auto = multi-worker for several processes, mirrored for several local devices
    strategy: str = _choice("auto", ("auto", "default", "mirrored", "multi-worker"))
    cpu_devices: int = _positive(1)  # TensorFlow only: logical CPU devices to mirror over without GPUs


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def scaled_lr(self, world_size: int) -> float:
        """The learning rate after the configured scaling rule for `world_size` workers."""
        factor = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}
        return self.train.lr * factor[self.train.lr_scaling]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file at `path`, then `key.sub=value` overrides, validated."""
    raw: dict = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    config = _build(Config, raw, prefix="")
    _check_paths(config)
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and dotted overrides, the same for every command and both trainers."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. train.epochs=3 data.dataset=fashion-mnist",
    )


def write_config(config: Config, path: Path) -> None:
    """Write the resolved config so that `--config path` repeats the run exactly."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: check the --config path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of sections (model:, data:, train:, ...), "
            f"not a {type(data).__name__}"
        )
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or " " in key:
        raise ConfigError(f"override {item!r} is not of the form section.key=value (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text  # an unparsable value stays a string; type checks report it
    return key, value


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is a value, not a section")
        node = child
    node[leaf] = value


def _build(cls, raw: Any, prefix: str):
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            guess = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{guess[0]}?" if guess else f"; known: {', '.join(known)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    values = {}
    for name, f in known.items():
        if name not in raw:
            continue
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], raw[name], f"{prefix}{name}.")
        else:
            values[name] = _check_value(f"{prefix}{name}", raw[name], hints[name], f.metadata)
    return cls(**values)


def _check_value(key: str, value: Any, hint, meta) -> Any:
    allowed = typing.get_args(hint) or (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key} must be set (it cannot be null)")
    kind = next(t for t in allowed if t is not type(None))
    if "choices" in meta and value not in meta["choices"]:
        guess = difflib.get_close_matches(str(value), meta["choices"], n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        raise ConfigError(f"{key} must be one of {', '.join(meta['choices'])}; got {value!r}{hint}")
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # `log.run_name=2024` parses as a number but means a name
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {_article(kind.__name__)}, got {value!r}")
    if meta.get("positive") and not value > 0:
        raise ConfigError(f"{key} must be positive, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if kind in (int, float) and value < 0:
        raise ConfigError(f"{key} must not be negative, got {value!r}")
    return value


def _check_paths(config: Config) -> None:
    name, folder = config.log.run_name, config.checkpoint.dir
    if name is not None and not RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"log.run_name {name!r} must be one folder name: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (set log.dir for where runs go)"
        )
    if folder is None:
        return
    path, log_dir = Path(folder).absolute(), Path(config.log.dir).absolute()
    if not folder.strip() or path == log_dir or path in log_dir.parents:
        raise ConfigError(
            f"checkpoint.dir {folder!r} must be a folder of its own, not log.dir or above it: "
            "e.g. checkpoint.dir=/scratch/$USER/ckpt/NAME"
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"checkpoint.dir {folder!r} is a file: point it at a folder")


def _article(type_name: str) -> str:
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}
    return names.get(type_name, type_name)
