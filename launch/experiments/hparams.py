"""TensorBoard's own comparison views for sweeps and comparisons: every run as an HParams session
(its hyperparameters and its numbers, in the HParams dashboard's table and parallel coordinates)
and a custom-scalars layout that puts every series' scaling curves in one chart each.

What TensorBoard shows at its defaults is what the CSV says: the experiment and the layout live in
the first session's run (in the logdir's root they would make a run named "."); the sessions'
metrics sort after the scaling charts (session/...) and sit at the session's world size, not as
single dots at step 0; the hyperparameters that differ between sessions come first, marked so,
which the dashboard shows (it shows five). The summaries are the plugins' protos, written with
launch.outputs.tensorboard's writer: no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from launch.outputs.summary import Summary
from launch.outputs.tensorboard import ScalarWriter, keep_tensorflow_out

# hyperparameter -> how a session's value is read (strings, or numbers)
HPARAMS = {
    "world_size": lambda s, profile: s.world_size,
    "framework": lambda s, profile: s.framework,
    "nodes": lambda s, profile: s.num_nodes,
    "network_profile": lambda s, profile: profile or "none",
    "precision": lambda s, profile: s.precision,
    "backend": lambda s, profile: s.backend,
    "model": lambda s, profile: s.model,
    "compression": lambda s, profile: s.compression,
    "accumulate_steps": lambda s, profile: s.accumulate_steps,
    "batch_size_per_worker": lambda s, profile: s.batch_size_per_worker,
}
METRICS = ("session/efficiency", "session/images_per_sec", "session/accuracy", "session/startup_s")
SCALING_CHARTS = {  # custom-scalars chart title -> the tag every series logs
    "images/s, every series (mean ± sd)": "scaling/images_per_sec",
    "images/s per worker, every series (mean ± sd)": "scaling/images_per_sec_per_worker",
    "scaling efficiency, every series (± the point's relative sd)": "scaling/efficiency",
}
BAND = "scaling_band"  # each scaling value's band, the tag's name with _low and _high (launch.experiments.scaling)


@dataclass(frozen=True)
class Session:
    name: str  # the run's name: its TensorBoard run under the folder's hparams/
    summary: Summary
    profile: str = ""  # a testbed sweep's network profile
    efficiency: float = math.nan  # a sweep point's, against its series' 1-worker point


def write_views(folder: Path, sessions: list[Session], scaling_layout: bool = False) -> None:
    """One run per session under folder/hparams/; the first also holds the experiment (which
    hyperparameters and metrics there are) and, for a sweep, the scaling layout. Each run gets one
    event file: a second writer's session start would make TensorBoard drop the first one's events."""
    keep_tensorflow_out()
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    infos = [_info(sessions, name, api_pb2) for name in HPARAMS]
    experiment = api_pb2.Experiment(
        hparam_infos=sorted(infos, key=lambda info: not info.differs),  # stable: HPARAMS' order otherwise
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in METRICS],
    )
    for i, session in enumerate(sessions):
        writer = ScalarWriter(folder / "hparams" / session.name)
        if i == 0:
            writer.summary(
                _plugin_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))
            )
            if scaling_layout:
                writer.summary(_scaling_layout())
        _write_session(writer, session)
        writer.close()


def _write_session(writer: ScalarWriter, session: Session) -> None:
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(group_name=session.name)
    for name, value in _values(session).items():
        if isinstance(value, str):
            start.hparams[name].string_value = value
        else:
            start.hparams[name].number_value = value
    writer.summary(
        _plugin_summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start))
    )
    s = session.summary
    for tag, value in zip(METRICS, (session.efficiency, s.images_per_sec, s.final_eval_accuracy, s.startup_s)):
        if not math.isnan(value):
            writer.scalar(tag, value, s.world_size)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    writer.summary(
        _plugin_summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))
    )


def _scaling_layout():
    """A custom-scalars layout: one margin chart per scaling tag, every series in it with its band
    (launch.experiments.scaling): margin charts are drawn as written, neither smoothed nor clipped.
    The plugin's summary, built as its TensorFlow-using helper builds it."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    def band(tag: str):
        name = tag.split("/", 1)[1]
        return layout_pb2.MarginChartContent.Series(value=tag, lower=f"{BAND}/{name}_low", upper=f"{BAND}/{name}_high")

    charts = [
        layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=[band(tag)]))
        for title, tag in SCALING_CHARTS.items()
    ]
    layout = layout_pb2.Layout(category=[layout_pb2.Category(title="scaling", chart=charts)])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[layout.SerializeToString()])
    value = summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG, metadata=metadata.create_summary_metadata(), tensor=tensor
    )
    return summary_pb2.Summary(value=[value])


def _values(session: Session) -> dict:
    return {name: read(session.summary, session.profile) for name, read in HPARAMS.items()}


def _info(sessions: list[Session], name: str, api_pb2):
    """A hyperparameter's type, and whether its value differs between the sessions."""
    values = [_values(session)[name] for session in sessions]
    numeric = values and not isinstance(values[0], str)
    kind = api_pb2.DATA_TYPE_FLOAT64 if numeric else api_pb2.DATA_TYPE_STRING
    return api_pb2.HParamInfo(name=name, type=kind, differs=len(set(values)) > 1)


def _plugin_summary(tag: str, data):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    value = summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return summary_pb2.Summary(value=[value])
