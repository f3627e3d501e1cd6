"""Checkpoints: written by rank 0, atomically (temp file + rename), read with weights_only=True so a
checkpoint file can never run code (before torch 2.6 weights_only could be made to run code,
CVE-2025-32434: there only the user's own files are read). One file per checkpointed step:
`step-00000469.pt`; resume takes the highest number (an epoch's end, or the step a preemption
stopped at: launch.outputs.checkpoints).

Files hold CPU tensors and are read onto the CPU, whatever device trained: a login node without a GPU
can read them, and load_state_dict puts each tensor where its parameter lives, except the optimizer's
`step` counters, which stay on the CPU where Adam reads them without a host sync (pytorch#74424).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from launch.atomic_files import atomic_write
from launch.errors import UserError
from launch.outputs.checkpoints import DamagedCheckpoint


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_name: str,
    progress: dict,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    state = {
        "framework": "torch",
        "model_name": model_name,
        "progress": progress,  # launch.run.loop's: epoch, step, sample, history, world sizes
        "model": on_cpu(model.state_dict()),
        "optimizer": on_cpu(optimizer.state_dict()),
        "rng": torch.get_rng_state(),  # the data order comes from (seed, epoch), not from here
        "scaler": scaler.state_dict() if scaler is not None else {},  # fp16's loss scale and its growth count
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:  # a full disk is one line naming the folder (launch.atomic_files)
        torch.save(state, f)


def on_cpu(state):
    """A state dict (nested dicts, lists and tensors) with every tensor copied to the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {key: on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_cpu(value) for value in state)
    return state


SOUND_WEIGHTS_ONLY = (2, 6)


def load_checkpoint(path: Path, model_name: str) -> dict:
    """The checkpoint's state, on the CPU; refuses files that are not a torch_dist checkpoint of this model."""
    refuse_foreign(path, torch_version())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code with an UnpicklingError, among others
        raise DamagedCheckpoint(
            f"{path}: not a loadable torch_dist checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}); remove it or point checkpoint.dir elsewhere"
        ) from None
    if not isinstance(state, dict) or state.get("framework") != "torch":
        raise UserError(f"{path}: not a torch_dist checkpoint; point checkpoint.dir at this run's checkpoints")
    if state.get("model_name") != model_name:
        raise UserError(
            f"{path}: holds model {state.get('model_name')!r}, not {model_name!r}; "
            "resume with the same model.name or use another checkpoint.dir"
        )
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["rng"])


def torch_version() -> tuple[int, int]:
    """The installed torch's (major, minor)."""
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def refuse_foreign(path: Path, version: tuple[int, int]) -> None:
    """Refuse another user's checkpoint where torch's weights_only loader is not sound."""
    owner = os.stat(path).st_uid
    if version < SOUND_WEIGHTS_ONLY and owner != os.geteuid():
        raise UserError(
            f"{path} belongs to uid {owner}, not you, and torch {version[0]}.{version[1]} can be made to run "
            "code while loading it (CVE-2025-32434): copy it yourself if you trust it, or use torch>=2.6"
        )
