"""What each rank trained, for the tests that prove no sample is lost or repeated: a per-batch
callback (launch.run.loop.batch_callbacks) that appends every batch's training-set indices to
<folder>/rank<R>.jsonl. In this process `install(folder)` adds it; in trainer processes, however
they are launched, `env(folder)` puts tests/sample_log_site on PYTHONPATH, whose sitecustomize
installs it when MNIST_DIST_SAMPLE_LOG names the folder."""

from __future__ import annotations

import json
from pathlib import Path

from launch.run import loop

HERE = Path(__file__).resolve().parent
VARIABLE = "MNIST_DIST_SAMPLE_LOG"


def install(folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def record(batch: dict) -> None:
        with open(folder / f"rank{batch['rank']}.jsonl", "a") as out:
            out.write(json.dumps({**batch, "indices": [int(i) for i in batch["indices"]]}) + "\n")

    loop.batch_callbacks.append(record)


def env(folder: str | Path) -> dict[str, str]:
    """The environment that makes a trainer process, and those it starts, log their samples to `folder`."""
    return {VARIABLE: str(folder), "PYTHONPATH": f"{HERE / 'sample_log_site'}:{HERE}"}
