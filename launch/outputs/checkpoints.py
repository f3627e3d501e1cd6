"""Which checkpoint a run resumes from: the loop's bookkeeping around the engines' files.

Each framework's checkpoints are files its engine writes in checkpoint.dir, one per checkpointed
step and named by it (launch.frameworks says how); a resume takes the highest step that reads. A folder that
holds another framework's checkpoints is refused rather than started over.
"""

from __future__ import annotations

from pathlib import Path

from launch.errors import UserError
from launch.frameworks import FRAMEWORKS


class DamagedCheckpoint(UserError):
    """A checkpoint file that cannot be read (cut short, corrupt): a resume tries the one before."""


def newest_first(folder: Path, framework: str) -> list[Path]:
    """`framework`'s checkpoint files in `folder`, from the highest step down."""
    fw = FRAMEWORKS[framework]
    found = [(step, path) for path in folder.glob("*") if (step := fw.checkpoint_step(path.name)) is not None]
    return [path for _, path in sorted(found, reverse=True)]


def latest(folder: Path, framework: str) -> Path | None:
    """`framework`'s checkpoint file of the highest step in `folder`, or None."""
    return next(iter(newest_first(folder, framework)), None)


def refuse_other_frameworks(folder: Path, framework: str) -> None:
    for other in FRAMEWORKS:
        if other != framework and latest(folder, other) is not None:
            raise UserError(
                f"{folder} holds {other} checkpoints, which {framework} cannot resume: point "
                "checkpoint.dir (or log.run_name) at this framework's run"
            )


def any_in(folder: Path) -> Path | None:
    """The latest checkpoint of any framework in `folder`, or None."""
    return next((path for fw in FRAMEWORKS if (path := latest(folder, fw)) is not None), None)
