"""The pieces a method adds to the one optimisation loop, composed rather than keyed.

In the spirit of optax's ``chain``: the loop (:func:`famr.loop.optimise`) runs the objective,
back-propagates, clips and steps; each part hooks in where it needs to, and a new part never
touches the others. A part derives from :class:`Part` and overrides only the hooks it needs:

- ``start(chosen, initial)``: the ``(name, parameter)`` pairs the loop will update, and the
  loop's one copy of their values on entry (shared by every part: read it, never write it);
- ``before_step(step, total)``: before each step (0-based), e.g. a penalty's schedule;
- ``gradients(params)``: after back-propagation, before clipping (in the order given);
- ``after_step(params)``: after the optimiser's step;
- ``should_stop(step)``: after each step (1-based); true ends the run there;
- ``record(entry, params)``: add to the epoch's history record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .losses import add_anchor_gradient_, squared_distance


class Part:
    """A part of the loop; override the hooks it needs."""

    def start(self, chosen: list[tuple[str, nn.Parameter]], initial: list[Tensor]) -> None:
        pass

    def before_step(self, step: int, total: int) -> None:
        pass

    def gradients(self, params: list[nn.Parameter]) -> None:
        pass

    def after_step(self, params: list[nn.Parameter]) -> None:
        pass

    def should_stop(self, step: int) -> bool:
        return False

    def record(self, entry: dict[str, float], params: list[nn.Parameter]) -> None:
        pass


def _aligned(
    tensors: dict[str, Tensor], chosen: list[tuple[str, nn.Parameter]], what: str
) -> list[Tensor]:
    """``tensors`` for each updated parameter, in order, on its device and dtype."""
    missing = [n for n, _ in chosen if n not in tensors]
    if missing:
        raise ValueError(f"{what} lacks parameters {missing[:4]}")
    return [tensors[n].to(device=p.device, dtype=p.dtype) for n, p in chosen]


@dataclass
class L2Anchor(Part):
    """The FAMR anchor ``(lam/2) sum (theta - theta_a)^2`` over the updated parameters.

    Its gradient is added with fused ops after back-propagation (no extra pass over the
    network; equal to back-propagating the plain formula, pinned by a test). The epoch record
    gets ``anchor`` and ``objective`` (when ``lam > 0``) and ``distance`` from the anchor point.

    Attributes:
        lam: Strength (0 = no force, the distance is still recorded from ``point``).
        point: ``{parameter name: tensor}`` to anchor to (default: the values on entry), e.g.
            the original weights during a second, sequential request.
    """

    lam: float = 0.0
    point: dict[str, Tensor] | None = None
    _point: list[Tensor] = field(default_factory=list, init=False, repr=False)

    def start(self, chosen, initial):
        if self.point is None:
            self._point = initial  # the loop's copy: no second one
        else:
            self._point = _aligned(self.point, chosen, "anchor")

    def gradients(self, params):
        add_anchor_gradient_(params, self._point, self.lam)

    def record(self, entry, params):
        distance_sq = float(squared_distance(params, self._point))
        if self.lam:
            entry["anchor"] = 0.5 * self.lam * distance_sq
            entry["objective"] = entry["loss"] + entry["anchor"]
        entry["distance"] = math.sqrt(distance_sq)


@dataclass
class UpdateMask(Part):
    """Entries where the mask is false never move: their gradients are zeroed and, after each
    step, their values are restored, so momentum and weight decay cannot move them either.

    Attributes:
        masks: ``{parameter name: bool tensor}`` over some of the updated parameters.
    """

    masks: dict[str, Tensor]
    _masks: dict[int, Tensor] = field(default_factory=dict, init=False, repr=False)
    _start: dict[int, Tensor] = field(default_factory=dict, init=False, repr=False)

    def start(self, chosen, initial):
        names = [n for n, _ in chosen]
        unknown = sorted(set(self.masks) - set(names))
        if unknown:
            raise ValueError(f"update_mask names parameters that are not updated: {unknown}")
        self._masks = {
            i: self.masks[n].to(device=p.device, dtype=torch.bool)
            for i, (n, p) in enumerate(chosen)
            if n in self.masks
        }
        self._start = {i: initial[i] for i in self._masks}

    def gradients(self, params):
        for i, mask in self._masks.items():
            params[i].grad.mul_(mask)

    def after_step(self, params):
        with torch.no_grad():
            for i, mask in self._masks.items():
                params[i].copy_(torch.where(mask, params[i], self._start[i]))


@dataclass
class EachStep(Part):
    """Call ``fn(step, total)`` before every step (0-based): terms that follow a schedule."""

    fn: Callable[[int, int], None]

    def before_step(self, step, total):
        self.fn(step, total)


@dataclass
class StopWhen(Part):
    """End the run at the first step (1-based) where ``fn(step)`` is true; the last epoch
    record then has ``"stopped_at"``."""

    fn: Callable[[int], bool]

    def should_stop(self, step):
        return bool(self.fn(step))
