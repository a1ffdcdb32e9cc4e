"""The one optimisation loop that training and every unlearning method reuse.

A method supplies an ``objective(batch) -> terms`` closure, data streams and the parts it
composes (:mod:`famr.parts`: the l2 anchor, update masks, step callbacks, stopping rules); the
loop owns the optimiser, the learning-rate schedule, autocast, BatchNorm mode, parameter
selection, data-parallel gradient sums, torch.compile, channels-last, gradient clipping,
divergence checks, progress reporting and the per-epoch history.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import torch
from torch import Tensor, nn

from . import distributed
from .config import OptimConfig
from .losses import squared_distance
from .models import head_name  # noqa: F401  (famr.loop.head_name, as before)
from .models.suffix import stage_pattern
from .parts import Part

Batch = dict[str, tuple[Tensor, Tensor]]
Objective = Callable[[Batch], dict[str, Tensor]]
Progress = Callable[[int, int], None]


class DivergenceError(RuntimeError):
    """The objective became NaN or infinite; the run stopped and no model should be kept."""


def select_parameters(model: nn.Module, spec: str) -> list[tuple[str, nn.Parameter]]:
    """The named parameters that ``spec`` selects for updating.

    Args:
        model: The network.
        spec: ``"all"``; ``"head"`` for the parameters of the last ``nn.Linear`` module in
            registration order (the classifier of torchvision ResNets, VGGs, CIFAR ResNets and
            famr's own models); ``"last_stage"`` for the body's last stage and the head
            (:func:`famr.models.suffix.last_stage`), ``"last_stage:SHARE"`` for the trailing
            modules holding that share of the body's parameters and the head,
            ``"last_blocks:N"`` for the last stage's last N blocks and the head
            (:func:`famr.models.suffix.last_blocks`), ``"last_stage_but_first"`` for the last
            stage without its first block and the head
            (:func:`famr.models.suffix.last_stage_but_first`); or a regular expression searched
            in each parameter name.

    Returns:
        ``(name, parameter)`` pairs in model order. Parameters with ``requires_grad=False``
        (frozen by the caller) are never selected.

    Raises:
        ValueError: The spec selects nothing (the message lists the parameter names).
    """
    every = list(model.named_parameters())
    # frozen means frozen: a parameter the caller set requires_grad=False on never moves
    named = [(n, p) for n, p in every if p.requires_grad]
    if not named:
        raise ValueError(
            "every parameter of the model is frozen (requires_grad=False); nothing can move"
        )
    if spec == "all":
        chosen = named
    elif spec == "head":
        name = head_name(model)
        prefix = name + "." if name else ""
        chosen = [(n, p) for n, p in named if n.startswith(prefix) and "." not in n[len(prefix) :]]
    else:
        try:
            pattern = re.compile(stage_pattern(model, spec))
        except re.error as err:
            raise ValueError(f"params={spec!r} is not a valid regular expression: {err}") from None
        chosen = [(n, p) for n, p in named if pattern.search(n)]
    if not chosen:
        frozen = len(every) - len(named)
        names = ", ".join(n for n, _ in named[:12]) + (", ..." if len(named) > 12 else "")
        raise ValueError(
            f"params={spec!r} selects no trainable parameter"
            + (f" ({frozen} frozen ones are never selected)" if frozen else "")
            + f"; trainable parameter names: {names}"
        )
    return chosen


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _sum_over_ranks(
    logged: dict[str, float] | None, params: list[nn.Parameter], some_rank_empty: bool
) -> dict[str, float]:
    """Sum the share-weighted gradients and logged terms over ranks.

    A rank that saw no example contributes zeros; it learns the term names from rank 0 (which
    always has the batch's first example).
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    distributed.all_reduce_sum_([p.grad for p in params])
    if some_rank_empty:
        keys = distributed.broadcast_object(sorted(logged) if logged is not None else None)
    else:
        keys = sorted(logged)
    values = torch.tensor([logged[k] if logged else 0.0 for k in keys], dtype=torch.float64)
    distributed.all_reduce_sum_([values])
    return dict(zip(keys, values.tolist(), strict=True))


def set_train_mode(model: nn.Module, batchnorm: str, moving: Sequence[nn.Parameter] = ()) -> None:
    """Put ``model`` in train mode; with ``batchnorm="eval"`` BatchNorm layers stay in eval;
    with ``"moved"`` only the BatchNorm layers whose parameters are among ``moving`` train (a
    re-initialised stage learns its statistics; the frozen rest keeps the original's).

    Why eval by default for unlearning: in train mode BatchNorm normalises with the statistics
    of the current batch and overwrites its running statistics with them. When the batches come
    from the forget set alone (one class), those statistics describe one class, and the model
    would be re-calibrated to it and lose accuracy on everything else for a reason unrelated
    to forgetting.
    """
    model.train()
    if batchnorm == "train":
        return
    ids = {id(p) for p in moving}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if batchnorm == "eval" or not own or not all(id(p) in ids for p in own):
                module.eval()


def _schedule(name: str, total: int) -> Callable[[int], float]:
    if name == "constant":
        return lambda step: 1.0
    if name == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    warm = max(1, int(0.2 * total))  # onecycle: linear up, then linear down to zero

    def onecycle(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return onecycle


def _optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


@contextlib.contextmanager
def _compile_errors(compiling: bool) -> Iterator[None]:
    """Turn a ``torch.compile`` backend failure into a one-line error that says what to do.

    Why: inductor compiles C++ for this machine's CPU on the first step, and that can fail for
    reasons outside famr (seen here: a shared inductor cache holding a precompiled header built
    under another ``ATEN_CPU_CAPABILITY``). It fails before anything is written; the user needs
    one line saying what to do, not a compiler log.
    """
    if not compiling:
        yield
        return
    from torch._dynamo.exc import BackendCompilerFailed

    try:
        yield
    except BackendCompilerFailed as err:
        inner = getattr(err, "inner_exception", err)
        lines = str(inner).strip().splitlines()
        first = f"{type(inner).__name__}: {lines[0] if lines else ''}"
        raise ValueError(
            f"compile=True failed for this model on this machine ({first[:200]}); "
            "run with compile=false"
        ) from None


def _channels_last(images: Tensor) -> Tensor:
    return images.contiguous(memory_format=torch.channels_last) if images.dim() == 4 else images


@dataclass
class Streams:
    """The data a method iterates: one driving stream and others cycled alongside it.

    One epoch is one pass over ``driver``; each step also draws the next batch of every stream
    in ``cycled`` (restarting it when exhausted), so a method that needs forget and retain
    batches together gets both in every step. A driver may also yield ready dicts of named
    batches (for methods that alternate phases, like SCRUB) and may define
    ``total_steps(epochs)`` when its epochs differ in length.
    """

    driver_name: str
    driver: Iterable
    cycled: dict[str, Iterable[tuple[Tensor, Tensor]]] = field(default_factory=dict)

    def total_steps(self, epochs: int) -> int:
        if hasattr(self.driver, "total_steps"):
            return self.driver.total_steps(epochs)
        return len(self.driver) * epochs  # type: ignore[arg-type]

    def epoch(self, iterators: dict[str, Iterator]) -> Iterator[Batch]:
        for batch in self.driver:
            out = dict(batch) if isinstance(batch, dict) else {self.driver_name: batch}
            for name, stream in self.cycled.items():
                try:
                    out[name] = next(iterators[name])
                except (StopIteration, KeyError):
                    iterators[name] = iter(stream)
                    out[name] = next(iterators[name])
            yield out


def optimise(
    model: nn.Module,
    objective: Objective,
    streams: Streams,
    cfg: OptimConfig,
    *,
    device: torch.device,
    parts: Sequence[Part] = (),
    progress: Progress | None = None,
) -> list[dict[str, float]]:
    """Minimise ``objective`` over ``streams``, with the method's ``parts`` composed in.

    Args:
        model: Network to update in place (already on ``device``).
        objective: Maps a batch dict to loss terms; the key ``"loss"`` is minimised, every
            other key is only logged.
        streams: The data to iterate.
        cfg: Loop options (optimiser, schedule, parameters, BatchNorm mode, precision, ...).
        device: Where the computation runs (for autocast).
        parts: :mod:`famr.parts` objects: an l2 anchor, an update mask, a per-step schedule,
            a stopping rule; their hooks run in the order given.
        progress: Called as ``progress(step, total_steps)`` after every step.

    Returns:
        One dict per epoch: the mean of each logged term, ``"distance"`` = ``||theta -
        theta_start||`` over the updated parameters at the end of the epoch (from the anchor
        point when an :class:`~famr.parts.L2Anchor` is given, which also adds ``"anchor"`` and
        ``"objective"``), ``"lr"``, ``"epoch"`` and ``"stopped_at"`` when a rule stopped it.

    Raises:
        DivergenceError: The loss became NaN or infinite (the message names the step).
    """
    chosen = select_parameters(model, cfg.params)
    params = [p for _, p in chosen]
    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for _, p in model.named_parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    start = [p.detach().clone() for p in params]  # the one copy; parts read it
    for part in parts:
        part.start(chosen, start)
    rank, world_size = distributed.world()
    if world_size > 1 and cfg.batchnorm != "eval" and _has_batchnorm(model):
        raise ValueError(
            f"batchnorm={cfg.batchnorm!r} is not supported under data parallelism (each rank would "
            "normalise with its own statistics); use batchnorm='eval'"
        )
    optimizer = _optimizer(params, cfg)
    total = streams.total_steps(cfg.epochs)
    total = total if cfg.max_steps is None else min(total, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.schedule, total))
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    history: list[dict[str, float]] = []
    iterators: dict[str, Iterator] = {}
    step, stopped = 0, None
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    compiled_before = getattr(model, "_compiled_call_impl", None)
    if cfg.compile:
        model.compile()  # in place: the objective's model(...) calls go through torch.compile
    try:
        set_train_mode(model, cfg.batchnorm, params)
        for epoch in range(cfg.epochs):
            sums: dict[str, float] = {}
            count = 0
            lr = optimizer.param_groups[0]["lr"]
            for batch in islice(streams.epoch(iterators), max(0, total - step)):
                for part in parts:
                    part.before_step(step, total)
                value, logged = _gradient(batch, objective, streams, cfg, autocast, params)
                if not math.isfinite(value):
                    raise DivergenceError(
                        f"the objective became {value} at step {step + 1} (epoch {epoch + 1}); "
                        "lower lr, set grad_clip, or raise the anchor strength"
                    )
                for part in parts:
                    part.gradients(params)
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                for part in parts:
                    part.after_step(params)
                scheduler.step()
                for key, term in logged.items():
                    sums[key] = sums.get(key, 0.0) + term
                count, step = count + 1, step + 1
                if progress is not None:
                    progress(step, total)
                if any([part.should_stop(step) for part in parts]):
                    stopped = step
                    break
            if count == 0:
                break
            record = {k: v / count for k, v in sums.items() if k != "loss"}
            record["loss"] = sums["loss"] / count
            record["distance"] = math.sqrt(float(squared_distance(params, start)))
            for part in parts:
                part.record(record, params)
            record["lr"] = lr
            record["epoch"] = epoch + 1
            if stopped is not None:
                record["stopped_at"] = stopped
            history.append(record)
            if stopped is not None:
                break
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
        if cfg.compile:  # hand the model back as it came (nn.Module.compile has no public undo)
            model._compiled_call_impl = compiled_before
        model.eval()
    return history


def _gradient(batch, objective, streams, cfg, autocast, params) -> tuple[float, dict[str, float]]:
    """One step's gradient in ``param.grad``: this rank's share of the batch under data
    parallelism (share-weighted, summed over ranks), else the whole batch. Returns the loss
    and the logged terms, summed over ranks."""
    world_size = distributed.world()[1]
    if cfg.channels_last:
        batch = {k: (_channels_last(x), y) for k, (x, y) in batch.items()}
    share, global_count = 1.0, None
    if world_size > 1:  # this rank's strided share of the global batch
        driver = streams.driver_name if streams.driver_name in batch else next(iter(batch))
        global_count = len(batch[driver][1])
        batch = {k: (distributed.shard(x), distributed.shard(y)) for k, (x, y) in batch.items()}
        share = len(batch[driver][1]) / global_count
    for p in params:
        p.grad = None
    if share > 0:
        with autocast, _compile_errors(cfg.compile):
            terms = objective(batch)
        (terms["loss"] * share).backward()
        logged = {k: float(v.detach()) * share for k, v in terms.items()}
    else:  # fewer examples than ranks in this batch: this rank adds nothing
        logged = None
    if world_size > 1:
        logged = _sum_over_ranks(logged, params, global_count < world_size)
    return logged["loss"], logged
