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
        self.cuda = device.type == "cuda"
        self.marks: dict[str, object] = {}
        self.steps: list[dict[str, object]] = []
        for parameter in model.parameters():
            if parameter.requires_grad:  # called in backward's order: the last call is the last gradient
                parameter.register_post_accumulate_grad_hook(lambda _: self.mark("ready"))

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks[name] = event
        else:
            self.marks[name] = time.perf_counter()

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
        return a.elapsed_time(b) / 1000 if self.cuda else b - a
