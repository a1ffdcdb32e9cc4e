"""The features a model computes on the way to its prediction, read with a hook.

The head-only fast path (``methods.head``), the certificate's exact logit bound (``theory``)
and the linear-probe attack (``attacks``) all need the input of one layer, usually the
classifier: this module sits below all three, so none of them imports another's internals.
It also runs a model from one of its stages on (:func:`stage_inputs`, :func:`fed_at`), for
famr's last_stage recipe, whose frozen stages give the same output on every pass.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from . import distributed
from .data.tensors import to_float


@torch.no_grad()
def head_inputs(
    model: nn.Module, head: nn.Module, images: Tensor, batch_size: int = 512, *, bf16: bool = False
) -> Tensor:
    """The inputs the model feeds its ``head`` for ``images`` (eval mode, returned as float32).

    With ``bf16`` the body runs under bfloat16 autocast (as the full-forward path does with
    ``bf16=True``), about four times faster on a CPU with bf16 support.
    """
    captured: list[Tensor] = []
    hook = head.register_forward_pre_hook(
        lambda _, inputs: captured.append(inputs[0].detach().float())
    )
    was_training = model.training
    model.eval()

    def features(part: Tensor) -> Tensor:
        captured.clear()
        for start in range(0, len(part), batch_size):
            x = part[start : start + batch_size]
            with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=bf16):
                model(to_float(x))
        return torch.cat(captured)

    try:
        # under torchrun each rank computes its share; every rank gets all the features
        return distributed.gather_rows(features, images)
    finally:
        hook.remove()
        model.train(was_training)


def layer_inputs(
    model: nn.Module, layer: str | None, images: Tensor, batch_size: int = 512
) -> Tensor:
    """The input of the submodule named ``layer`` (default: the classifier, the model's last
    ``nn.Linear``) for each image, flattened to ``(N, D)`` float32.

    Raises:
        ValueError: The model has no submodule of that name (the message lists a few).
    """
    from .models import head_name

    name = head_name(model) if layer is None else layer
    try:
        module = model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"layer={layer!r} is not a submodule; some names: {names}") from None
    return head_inputs(model, module, images, batch_size).flatten(1)


# --- the frozen prefix of a run that moves only a network's later stages ------------------------
#
# famr's last_stage recipe re-initialises (most of) the body's last stage and trains it again for
# many passes over a retain buffer: every step runs the frozen stages before it again, on the same
# images, to the same outputs (they are frozen, and their BatchNorm layers stay in eval mode).
# Those outputs can be computed once. PyTorch has no way to run "a model from its third stage
# on" for an arbitrary forward(), so the functions below do it with hooks: the modules that run
# before the first moving stage return NaN of their recorded shape instead of computing (so
# any glue code in forward() still sees the shapes it expects, and any use of them past the
# stage shows), and the stage's input is replaced by the cached tensor. Whether that reproduces the model is checked on real images
# before a run relies on it (:func:`prefix_problem`).


class _Captured(Exception):
    """Raised by a hook to end a forward pass once the wanted input is captured."""


def _first_moving_stage(model: nn.Module, moving: set[int], probe: Tensor) -> str | None:
    """The submodule where a run that moves only the parameters whose ``id`` is in ``moving``
    starts: the outermost ancestor of the first module to execute with a moving parameter of
    its own whose parameters all move (by identity, so a module sharing a moving weight counts
    as moving). ``None`` when no frozen parameterised module runs before it."""
    order: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, _i, n=name: order.append(n))
        for name, m in model.named_modules()
        if name and any(True for _ in m.parameters(recurse=False))
    ]
    try:
        with torch.no_grad():
            model.eval()(probe)
    finally:
        for h in hooks:
            h.remove()

    def moves(name: str) -> bool:
        return any(id(p) in moving for p in model.get_submodule(name).parameters(recurse=False))

    first = next((i for i, name in enumerate(order) if moves(name)), None)
    if first is None or all(moves(name) for name in order[:first]):
        return None
    start = order[first]
    while "." in start:
        parent = start.rpartition(".")[0]
        if not all(id(p) in moving for p in model.get_submodule(parent).parameters()):
            break
        start = parent
    return start


def _prefix_outputs(model: nn.Module, start: str, probe: Tensor) -> dict[str, Tensor] | None:
    """The outermost modules that complete before ``start`` begins, with an output of each for
    ``probe`` (the shapes their stand-ins return); ``None`` if one returns no single tensor."""
    done: dict[str, object] = {}
    target = model.get_submodule(start)

    def stop(_m, _i):
        raise _Captured

    hooks = [target.register_forward_pre_hook(stop)]
    hooks += [
        m.register_forward_hook(lambda _m, _i, out, n=name: done.setdefault(n, out))
        for name, m in model.named_modules()
        if name and not start.startswith(name + ".") and name != start
    ]
    try:
        with torch.no_grad():
            model.eval()(probe)
    except _Captured:
        pass
    finally:
        for h in hooks:
            h.remove()
    outer = {
        name: out
        for name, out in done.items()
        if not any(name.startswith(other + ".") for other in done)
    }
    if not all(isinstance(out, Tensor) for out in outer.values()):
        return None
    return outer  # type: ignore[return-value]


@torch.no_grad()
def stage_inputs(
    model: nn.Module,
    start: str,
    images: Tensor,
    batch_size: int = 512,
    *,
    bf16: bool = False,
    eval_mode: bool = True,
) -> Tensor:
    """The input submodule ``start`` receives for each of ``images`` (the rest of each forward
    pass is skipped), in eval mode unless ``eval_mode`` is false (the model's own modes)."""
    captured: list[Tensor] = []

    def grab(_m, inputs):
        if not inputs or not isinstance(inputs[0], Tensor):
            raise ValueError(f"{start} takes no positional tensor input")
        captured.append(inputs[0].detach())
        raise _Captured

    hook = model.get_submodule(start).register_forward_pre_hook(grab)
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        for at in range(0, len(images), batch_size):
            x = to_float(images[at : at + batch_size])
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
                try:
                    model(x)
                except _Captured:
                    pass
    finally:
        hook.remove()
        if eval_mode:
            model.train(was_training)
    if len(captured) != -(-len(images) // batch_size):
        raise ValueError(f"{start} did not run on every batch")
    return torch.cat(captured)


@contextlib.contextmanager
def fed_at(model: nn.Module, start: str, stand_ins: dict[str, Tensor], dtype: torch.dtype):
    """Within, ``model(x)`` takes ``x`` as the input of submodule ``start``: each module in
    ``stand_ins`` (those that run before it) returns NaN (zeros for integer outputs) shaped
    like its recorded output, for ``x``'s batch size, instead of computing, and ``start``
    receives ``x`` as ``dtype``."""
    fed: dict[str, Tensor] = {}
    saved = {}

    def stand_in(example: Tensor):
        # NaN, so that any use of a stand-in's output past ``start`` shows in the logits (even
        # through a weight that is zero now); integer outputs cannot hold NaN: zeros
        fill = float("nan") if example.is_floating_point() else 0

        def forward(*_args, **_kwargs):
            x = fed["x"]
            shape = (len(x), *example.shape[1:])
            return torch.full(shape, fill, dtype=example.dtype, device=x.device)

        return forward

    hooks = [
        model.register_forward_pre_hook(lambda _m, inputs: fed.__setitem__("x", inputs[0])),
        # the stage gets the cached tensor in the dtype it was captured in (bfloat16 under
        # autocast), as the full forward pass hands it over, not as the batches carry it
        model.get_submodule(start).register_forward_pre_hook(
            lambda _m, inputs: (fed["x"].to(dtype), *inputs[1:])
        ),
    ]
    try:
        for name, example in stand_ins.items():
            module = model.get_submodule(name)
            saved[name] = module.__dict__.get("forward")
            module.forward = stand_in(example)
        yield
    finally:
        for h in hooks:
            h.remove()
        for name, previous in saved.items():
            module = model.get_submodule(name)
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        fed.clear()
