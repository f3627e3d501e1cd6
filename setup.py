from pathlib import Path

from setuptools import find_packages, setup

EXTRAS = {
    # Ranges, not pins: GPU clusters need the CUDA builds that match their drivers.
    "torch": ["torch>=2.1"],
    "tf": ["tensorflow>=2.16"],
    "tf-cpu": ["tensorflow-cpu>=2.16"],  # the same package without CUDA, for CPU-only machines
    "horovod": ["horovod>=0.28.1"],
    "test": ["pytest>=7", "pytest-timeout>=2.1", "pytest-xdist>=3.5", "ruff>=0.6"],
}
EXTRAS["all"] = EXTRAS["torch"] + EXTRAS["tf"] + EXTRAS["test"]

setup(
    name="mnist-dist",
    version="0.1.0",
    description="Data-parallel MNIST training for TensorFlow and PyTorch, from one CPU to many GPUs and nodes",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["launch", "launch.*", "torch_dist", "torch_dist.*", "tf_dist", "tf_dist.*"]),
    install_requires=[
        "numpy>=1.23",
        "PyYAML>=6",
        "tensorboard>=2.14",
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require=EXTRAS,
    data_files=[("share/mnist-dist/slurm", [str(p) for p in sorted(Path("slurm").iterdir()) if p.is_file()])],
    entry_points={"console_scripts": ["mnist-dist=launch.cli.main:main"]},
)
