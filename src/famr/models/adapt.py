"""Any classifier through one front door: models whose forward does not return a plain logits
tensor (a Hugging Face ``ModelOutput``, a dict, a tuple), and models kept in float64 or
bfloat16.

famr computes in float32 on ``(batch, K)`` logits. Rather than wrap a model in another module
(which would rename every parameter, and with it ``params="head"``, anchors and checkpoints),
a forward hook hands back the logits, and the dtype is switched for the duration of a run and
restored afterwards, so the model a user gets back behaves like the one they passed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: the tensor itself, an object's or a dict's ``logits``
    (Hugging Face classifiers), or a tuple's / list's first element.

    Raises:
        ValueError: None of these holds a tensor (the message says what famr expects).
    """
    if isinstance(output, Tensor):
        return output
    logits = (
        output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    )
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if isinstance(logits, Tensor):
        return logits
    raise ValueError(
        f"the model's forward returned {type(output).__name__}; famr needs the logits: a "
        "(batch, K) tensor, an object or dict with a 'logits' tensor, or a tuple whose first "
        "element is the logits"
    )


def _logits_hook(module: nn.Module, args: Any, output: Any) -> Tensor | None:
    return None if isinstance(output, Tensor) else logits_of(output)


@contextlib.contextmanager
def plain_logits(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model(x)`` returns its logits tensor, whatever its forward returns."""
    handle = model.register_forward_hook(_logits_hook)
    try:
        yield model
    finally:
        handle.remove()


def _floating(model: nn.Module) -> dict[str, torch.dtype]:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return {name: t.dtype for name, t in tensors if t.is_floating_point()}


@contextlib.contextmanager
def in_float32(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every floating parameter and buffer of ``model`` is float32; afterwards
    each gets its own dtype back (a bfloat16 model is updated in float32 and rounded once at
    the end, rather than accumulating bfloat16 rounding at every step)."""
    dtypes = _floating(model)
    if all(d == torch.float32 for d in dtypes.values()):
        yield model
        return
    model.float()
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in dtypes:
                    p.data = p.data.to(dtypes[name])
            for name, b in list(model.named_buffers()):
                if name in dtypes:
                    owner, _, attr = name.rpartition(".")
                    module = model.get_submodule(owner) if owner else model
                    module._buffers[attr] = b.to(dtypes[name])
