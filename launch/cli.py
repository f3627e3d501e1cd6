"""The `mnist-dist` command (also `python -m launch`)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from launch import __version__
from launch.config import load_config
from launch.data import MIRRORS, load_files, locate
from launch.errors import UserError, report_and_exit

PROG = "mnist-dist"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Data-parallel MNIST training for TensorFlow and PyTorch: "
        "launch, prepare data, measure scaling.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser(
        "data", help="find or download a dataset, verify it, print where it is",
        description="Prepare a dataset once (say on a login node with internet) so that compute "
        "nodes find it offline. Lookup: --dir, the cache ($MNIST_DIST_DATA), system packages "
        "(Debian's dataset-fashion-mnist), then the public mirrors (SHA-256 verified).")
    data.add_argument("--dataset", choices=sorted(MIRRORS), required=True)
    data.add_argument("--dir", help="folder to look in first and to download into")
    data.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    data.set_defaults(func=cmd_data)

    config = commands.add_parser(
        "config", help="validate a config with overrides and print it resolved",
        description="Print the config a run would use: defaults, then --config, then overrides.")
    add_config_arguments(config)
    config.set_defaults(func=cmd_config)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and dotted overrides, the same for every command and both trainers."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. train.epochs=3 data.dataset=fashion-mnist")


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    files = locate(args.dataset, args.dir, download=not args.no_download)
    data = load_files(args.dataset, files)
    print(f"{args.dataset}: {data.source}")
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        counts = np.bincount(labels, minlength=10)
        print(f"  {split}: {len(images)} images {images.shape[1]}x{images.shape[2]} {images.dtype}, "
              f"labels per class {counts.min()}..{counts.max()}")
    for path in files.values() if isinstance(files, dict) else [files]:
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except UserError as exc:
        report_and_exit(PROG, exc)
    sys.exit(code)
