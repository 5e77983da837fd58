"""Exponential moving average of a model's weights during training (``train.ema_decay``).

After every optimizer step the average moves towards the weights, a ← a + (1 − d)(w − a), with the decay warmed
up as torch_ema and MACE do, d = min(ema_decay, (1 + n) / (10 + n)) after n steps, so that the first steps do
not drag the random initialization along. The average is what validation, early stopping and ``model.pt`` see
(:meth:`EMA.applied`); training steps on the raw weights. Every rank of a DDP run holds the same weights, so
the same average, without communication.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class EMA:
    """The moving average of ``model``'s floating-point parameters (buffers are the model's own)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay, self.steps = decay, 0
        self.average = {name: p.detach().clone() for name, p in model.named_parameters()}

    def update(self, model: torch.nn.Module) -> None:
        """One step: after the optimizer's."""
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            for name, p in model.named_parameters():
                self.average[name].lerp_(p.detach(), 1.0 - d)
        self.steps += 1

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """``model`` holds the average inside the block, its own weights again after it."""
        own = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._copy_into(model, self.average)
        try:
            yield model
        finally:
            self._copy_into(model, own)

    @staticmethod
    def _copy_into(model, values) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(values[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "average": {k: v.cpu() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.steps = state["decay"], state["steps"]
        for name, value in state["average"].items():
            self.average[name].copy_(value)
