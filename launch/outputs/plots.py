"""matplotlib, drawing to files: every PNG a run or a report writes."""


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on a compute node), imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
