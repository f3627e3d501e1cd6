"""A trainer process's entry point, the same for both frameworks: arguments, config, world, the
framework's training, and one exit code. Every failure is one line on stderr that names this rank
and host: a user error with its fix, or a framework's exception by its type and cause
(launch.errors.describe; the traceback with MNIST_DIST_TRACEBACK=1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from launch import log, signals
from launch.cluster.world import World, detect_world, rank_hosts
from launch.config import Config, add_config_arguments, load_config
from launch.errors import UserError, describe


def parse_args(prog: str, argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train an MNIST model data-parallel. Rank and world size come from the launcher's environment.",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)


def main(prog: str, train: Callable[[Config, World], int], argv: list[str] | None = None) -> NoReturn:
    """Run `train` on this rank and end the process with its code (leave)."""
    signals.end_with_parent(os.getppid())  # a launcher killed outright leaves no rank training
    log.setup(prog)
    world = None
    try:
        config = parse_args(prog, argv)
        world = detect_world()
        log.set_world(world.rank, world.size, world.host)
        code = train(config, world)
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        if os.environ.get("MNIST_DIST_TRACEBACK") == "1":
            raise
        _fail(f"{describe(exc, rank_hosts(world) if world else [])} (MNIST_DIST_TRACEBACK=1 shows the traceback)", 1)
    leave(code)


def _fail(message: str, code: int) -> NoReturn:
    """One line on stderr, and the exit code. Under torchrun the line also goes to its error file
    (TORCHELASTIC_ERROR_FILE, as torch's @record writes it): torchrun's failure summary, the last
    thing it prints, then shows it for each failed rank instead of a link to its docs."""
    log.get().error(message)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        with contextlib.suppress(OSError):
            Path(error_file).write_text(json.dumps({"message": log.error_line(message), "timestamp": int(time.time())}))
    leave(code)


_before_leaving: list[Callable[[], None]] = []


def before_leaving(callback: Callable[[], None]) -> None:
    """Run `callback` as the rank leaves: the clean-up a library left to atexit, which leave() skips."""
    _before_leaving.append(callback)


def leave(code: int) -> NoReturn:
    """End the process with `code`, skipping the interpreter's teardown: by now the rank has written
    its files and left its process group, so unloading torch's or TensorFlow's modules only costs
    time, and their C++ destructors abort the process if a library thread is still running. main()
    is a process's entry point, not a function to call from other Python code."""
    for callback in _before_leaving:
        with contextlib.suppress(Exception):
            callback()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):
            stream.flush()
    os._exit(code)
