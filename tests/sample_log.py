"""What each rank trained, for the tests that prove no sample is lost or repeated: a per-batch
callback (launch.run.loop.batch_callbacks) that appends every batch's training-set indices to
<folder>/rank<R>.jsonl. In this process `install(folder)` adds it; in trainer processes, however
they are launched, `env(folder)` puts tests/sample_log_site on PYTHONPATH, whose sitecustomize
installs it when MNIST_DIST_SAMPLE_LOG names the folder. `env(folder, hold="R:S")` also makes rank R
stop after its step S until it is killed, so a drill can lose a host at a known step."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from launch.run import loop

HERE = Path(__file__).resolve().parent
VARIABLE = "MNIST_DIST_SAMPLE_LOG"
HOLD = "MNIST_DIST_SAMPLE_HOLD"


def install(folder: str | Path, hold: str = "") -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def record(batch: dict) -> None:
        with open(folder / f"rank{batch['rank']}.jsonl", "a") as out:
            out.write(json.dumps({**batch, "indices": [int(i) for i in batch["indices"]]}) + "\n")
        if hold == f"{batch['rank']}:{batch['step']}":
            threading.Event().wait()

    loop.batch_callbacks.append(record)


def env(folder: str | Path, hold: str = "") -> dict[str, str]:
    """The environment that makes a trainer process, and those it starts, log their samples to `folder`."""
    return {VARIABLE: str(folder), HOLD: hold, "PYTHONPATH": f"{HERE / 'sample_log_site'}:{HERE}"}
