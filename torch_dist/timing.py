"""Where a rank's step goes (launch.run.stragglers): computing, or in the gradients' collective.

The last parameter whose gradient is accumulated marks the end of backward's compute ("ready");
the collective lasts until the gradients are reduced ("reduced": DDP has waited for them when the
last backward returns, Horovod once its optimizer has synchronized). Marks are host times on the
CPU and CUDA events on a GPU (where the host runs ahead of the device), read once per interval,
after the loop's device sync.
"""

from __future__ import annotations

import time

import torch


class StepClock:
    def __init__(self, model: torch.nn.Module, device: torch.device):
        # Marks cost host time in a step that a GPU runs in ~2 ms: a cached stream (current_stream()
        # costs more than the record) and one "ready" record per backward, not one per parameter.
        self.stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        self.marks: dict[str, object] = {}
        self.steps: list[dict[str, object]] = []
        trained = [p for p in model.parameters() if p.requires_grad]
        self.per_backward, self.accumulated = len(trained), 0
        for parameter in trained:  # each is called once per backward, in backward's order
            parameter.register_post_accumulate_grad_hook(self._accumulated)

    def _accumulated(self, _) -> None:
        self.accumulated += 1
        if self.accumulated % self.per_backward == 0:  # the backward's last gradient
            self.mark("ready")

    def mark(self, name: str) -> None:
        if self.stream is None:
            self.marks[name] = time.perf_counter()
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        self.marks[name] = event

    def end_step(self) -> None:
        self.mark("end")
        self.steps.append(self.marks)
        self.marks = {}

    def take(self) -> tuple[float, float]:
        """Seconds computing and in the collective over the steps since the last call."""
        compute = collective = 0.0
        for m in self.steps:
            collective += self._seconds(m["ready"], m["reduced"])
            compute += self._seconds(m["start"], m["ready"]) + self._seconds(m["reduced"], m["end"])
        self.steps = []
        return compute, collective

    def _seconds(self, a, b) -> float:
        return b - a if self.stream is None else a.elapsed_time(b) / 1000
