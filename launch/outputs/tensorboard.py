"""TensorBoard event files without TensorFlow.

TensorBoard's writer imports TensorFlow when it is installed (seconds of start-up, and never wanted
in launch) unless `tensorboard.compat.notf` is importable; then it uses its own stub.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path


def keep_tensorflow_out() -> None:
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


class ScalarWriter:
    """Writes scalar summaries into one event file in `logdir` (one TensorBoard run).

    Each writer starts with a session START event at `first_step`, the first step it will write.
    A run resumed from an earlier checkpoint replays the steps after it; TensorBoard treats every
    START after a run's first as a restart and drops the events it read from that step on (the
    purge torch's SummaryWriter(purge_step=) asks for), so curves continue without folding back.
    """

    def __init__(self, logdir: Path, first_step: int = 0):
        keep_tensorflow_out()
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir))
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=first_step, session_log=start))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def summary(self, summary, step: int = 0) -> None:
        """A plugin's summary proto (HParams, custom scalars), as it is."""
        from tensorboard.compat.proto import event_pb2

        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def close(self) -> None:
        self._writer.close()


def text_summary(tag: str, markdown: str):
    """A Text-dashboard summary (the text plugin's tensor of one string, rendered as Markdown)."""
    keep_tensorflow_out()
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.text import metadata

    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[markdown.encode()], tensor_shape=tensor_shape_pb2.TensorShapeProto()
    )
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(tag, ""), tensor=tensor)
    return summary_pb2.Summary(value=[value])


def image_summary(tag: str, png: Path):
    """An Images-dashboard summary of a PNG file, as it is."""
    keep_tensorflow_out()
    from tensorboard.compat.proto import summary_pb2

    data = png.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])
