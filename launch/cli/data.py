"""`mnist-dist data`: find or download a dataset, verify it, print where it is."""

from __future__ import annotations

import argparse

import numpy as np

from launch.data.datasets import MIRRORS, load_files, locate


def add(commands) -> None:
    data = commands.add_parser(
        "data",
        help="find or download a dataset, verify it, print where it is",
        description="Prepare a dataset once (say on a login node with internet) so that compute "
        "nodes find it offline. Lookup: --dir, the cache ($MNIST_DIST_DATA), system packages "
        "(Debian's dataset-fashion-mnist), then the public mirrors (SHA-256 verified).",
    )
    data.add_argument("--dataset", choices=sorted(MIRRORS), required=True)
    data.add_argument("--dir", help="folder to look in first and to download into")
    data.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    data.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    files = locate(args.dataset, args.dir, download=not args.no_download)
    data = load_files(args.dataset, files)
    print(f"{args.dataset}: {data.source}")
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        counts = np.bincount(labels, minlength=10)
        print(
            f"  {split}: {len(images)} images {images.shape[1]}x{images.shape[2]} {images.dtype}, "
            f"labels per class {counts.min()}..{counts.max()}"
        )
    for path in files.values() if isinstance(files, dict) else [files]:
        print(f"  {path}")
    return 0
