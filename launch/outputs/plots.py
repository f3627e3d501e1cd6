"""matplotlib, drawing to files: every PNG a run or a report writes."""

from pathlib import Path

from launch.atomic_files import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on a compute node), imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    """Write the figure whole (launch.atomic_files), and close it."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    pyplot().close(fig)
