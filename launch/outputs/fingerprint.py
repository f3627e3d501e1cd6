"""What makes a checkpoint this run's: the run's id and a fingerprint of what defines its training.

A resume continues a run only from a checkpoint with the run's id (from run.json in its run
directory) and the same fingerprint. The fingerprint holds the keys whose change would make the
resumed run a different training: the model, the data (its content's SHA-256), the batch, the
optimizer and its settings, the seed and data order, the precision, the accumulation and the
gradient compression. Everything else may change on a resume: train.epochs and train.max_steps (to
train further), the world size and local devices (elastic resume), threads, warm-up, logging,
checkpointing, the backend and its timeouts.
"""

from __future__ import annotations

import secrets

from launch.config import Config

FINGERPRINT_KEYS = (
    "model.name",
    "data.dataset",
    "data.limit",
    "data.custom",
    "train.batch_size",
    "train.lr",
    "train.lr_scaling",
    "train.optimizer",
    "train.momentum",
    "train.seed",
    "train.shuffle",
    "train.precision",
    "train.accumulate_steps",
    "dist.compression",
    "dist.powersgd_rank",
    "dist.powersgd_start",
)
ID_BITS = 48  # a run id travels between ranks as a float: 48 bits are exact in a float64


def new_run_id() -> int:
    return secrets.randbits(ID_BITS)


def id_text(run_id: int) -> str:
    return f"{run_id:012x}"


def fingerprint(config: Config, data_sha256: str) -> dict:
    """The settings that define this training, by dotted key, and the data's checksum."""
    tree = config.to_dict()
    values = {}
    for key in FINGERPRINT_KEYS:
        section, name = key.split(".")
        values[key] = tree[section][name]
    values["data.sha256"] = data_sha256
    return values


def differences(checkpoint: dict, now: dict) -> list[str]:
    """`key: checkpoint's -> this run's` for each fingerprint key that differs."""
    keys = sorted(set(checkpoint) | set(now))
    return [f"{key} {checkpoint.get(key)!r} -> {now.get(key)!r}" for key in keys if checkpoint.get(key) != now.get(key)]
