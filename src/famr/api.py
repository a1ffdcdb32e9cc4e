"""The front door: ``unlearn``, ``train``, ``evaluate``. Validate, copy, seed, time, dispatch."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from . import distributed
from .config import OptimConfig, TrainConfig, make_config
from .data.files import ImageFiles, batches
from .data.forget import REQUEST_KINDS, Splits
from .data.tensors import to_float, to_tensors
from .loop import DivergenceError, Progress
from .methods import METHODS, MethodData, buffer_rows, takes_retain
from .metrics import METRICS, SplitOutputs
from .metrics.gaps import gaps
from .models.adapt import in_float32, plain_logits
from .registry import Entry
from .theory import certify
from .training import fit_cross_entropy


@dataclass
class Result:
    """The outcome of one unlearning (or training) run.

    Attributes:
        model: The new model (the input model is never modified).
        method: Method name.
        config: The config used, with every default filled in.
        history: Per-epoch records from the loop.
        seconds: Wall time of the method itself (data already on the device).
        certificate: For methods minimising the anchored FAMR objective, the deviation
            certificate (see :mod:`famr.theory`); ``None`` otherwise.
        moved: Names of the parameters the run changed (never one the caller froze with
            ``requires_grad=False``).
    """

    model: nn.Module
    method: str
    config: OptimConfig
    history: list[dict[str, float]]
    seconds: float
    certificate: dict[str, Any] | None = field(default=None)
    moved: list[str] = field(default_factory=list)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not valid: {err}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={str(device)!r} is not available: this machine has no GPU")
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device={str(device)!r} is not available: this machine has {count} GPU(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"device={str(device)!r} is not supported; use cpu or cuda[:N]")
    return dev


def _check_finite(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"the model's parameter {name!r} holds NaN or infinite values")


@torch.no_grad()
def num_outputs(model: nn.Module, sample: Tensor) -> int:
    """The number of classes K a classifier outputs (one forward pass in eval mode).

    Raises:
        ValueError: The model cannot take these images (e.g. another channel count), or it
            does not return ``(batch, K)`` logits.
    """
    was_training = model.training
    model.eval()
    try:
        with plain_logits(model):
            logits = model(to_float(sample[:1]))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"the model cannot take images of shape {tuple(sample.shape[1:])} (channels, height, "
            f"width): {first[:200]}"
        ) from None
    finally:
        model.train(was_training)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"the model returned logits of shape {tuple(logits.shape)}; famr needs (batch, K) "
            "with K >= 2 classes"
        )
    return int(logits.shape[1])


def _tensors_on(dataset: Dataset, name: str, device: torch.device) -> tuple[Tensor, Tensor]:
    images, labels = to_tensors(dataset, name=name)
    return images.to(device), labels.to(device)


def _check_labels(labels: Tensor, name: str, k: int) -> None:
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(
            f"the {name} set has labels outside 0..{k - 1} (the model has {k} outputs)"
        )


def _method(method: str | Entry) -> Entry:
    return method if isinstance(method, Entry) else METHODS.get(method)


def _seeded_run(seed: int, device: torch.device, fn):
    # fork_rng keeps the caller's global RNG state untouched while the run seeds it.
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, time.perf_counter() - start


def _request_kind(forget, forget_classes, kind: str | None) -> str | None:
    """The request's kind: ``kind`` as given, else the request object's, else from the
    removed classes (the request's, else ``forget_classes``: ``[]`` samples, classes listed
    classes; not given: unknown). A kind at odds with the removed classes is refused."""
    if kind is not None and kind not in REQUEST_KINDS:
        raise ValueError(f"kind={kind!r} is not valid; choose one of: {', '.join(REQUEST_KINDS)}")
    own = forget.kind if isinstance(forget, Splits) else None
    if kind is not None and own is not None and kind != own:
        raise ValueError(f"kind={kind!r} contradicts the request, which is a {own!r} request")
    removed = forget.forget_classes if isinstance(forget, Splits) else forget_classes
    kind = kind or own
    if kind is None:
        return None if removed is None else ("classes" if len(removed) else "samples")
    if removed is not None and (kind == "classes") != bool(len(removed)):
        rule = "removes at least one" if kind == "classes" else "removes no whole"
        raise ValueError(
            f"kind={kind!r} contradicts forget_classes={list(removed)}: a {kind} request "
            f"{rule} class"
        )
    return kind


def _request_parts(forget, retain, forget_classes, takes_retain: bool):
    """``forget`` may be the request itself (:class:`famr.Splits`): its forget set, the classes
    it removes entirely, and its retain set when the method reads one."""
    if not isinstance(forget, Splits):
        return forget, retain, forget_classes
    if forget_classes is not None and sorted(forget_classes) != sorted(forget.forget_classes):
        raise ValueError(
            f"forget_classes={list(forget_classes)} contradicts the request, which removes "
            f"classes {forget.forget_classes}"
        )
    if retain is None and takes_retain:
        retain = forget.retain
    return forget.forget, retain, forget.forget_classes


def _removed_classes(entry: Entry, cfg, forget_y: Tensor, retain_y: Tensor | None, given):
    """The classes the request removes entirely.

    Given (or from the request object), they are taken as they are. Otherwise they matter only
    to FAMR's ``target="retained"``: then the forget set's labels are taken for removed classes
    only when a retain set shows none of them; without a retain set a sample request could not
    be told from a class request, and guessing "class" degraded models silently (issue 19).
    """
    labels = sorted(set(forget_y.tolist()))
    if given is not None:
        given = sorted({int(c) for c in given})
        stray = sorted(set(labels) - set(given)) if given else []
        if stray:  # a class request's forget set holds only the classes it removes
            raise ValueError(
                f"forget_classes={given} does not cover the forget set's classes {stray}: list "
                "every class the request removes, or [] for a sample request"
            )
        return given
    if getattr(cfg, "target", None) != "retained":
        return labels
    if retain_y is None:
        raise ValueError(
            f"method {entry.name!r} (target='retained') must know which classes the request "
            "removes entirely: pass the request (famr.ClassForget(3).split(...)) as forget, or "
            "forget_classes=[...] ([] for a sample request)"
        )
    shared = sorted(set(labels) & set(retain_y.tolist()))
    if shared:
        raise ValueError(
            f"the forget set's classes {shared} also appear in the retain set, so this is not a "
            "class request; pass forget_classes=[] (a sample request) or the request object"
        )
    return labels


def unlearn(
    model: nn.Module,
    forget: Dataset | Splits,
    retain: Dataset | None = None,
    *,
    method: str | Entry = "famr",
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    forget_classes: Sequence[int] | None = None,
    anchor: nn.Module | None = None,
    holdout: Dataset | None = None,
    kind: str | None = None,
    **config: Any,
) -> Result:
    """Remove what ``model`` learned from ``forget``.

    Args:
        model: A trained classifier. Its forward may return the logits ``(batch, K)``, an
            object or dict with ``logits`` (Hugging Face), or a tuple whose first element is
            the logits; float64 and bfloat16 models run in float32 and come back in their own
            dtype. Never modified.
        forget: The request (:class:`famr.Splits`, from ``spec.split(...)``: forget set,
            retain set and removed classes in one), or a data set of ``(image, label)`` pairs
            to forget.
        retain: Data set of pairs to keep; required by methods that need it (default: the
            request's retain set when ``forget`` is a request and the method reads one).
        method: A registered method name (see :func:`list_methods`) or its registry entry.
            The default ``famr`` resolves its configuration from what the request holds (see
            :mod:`famr.methods.famr_auto`): with a retain set it re-initialises and distills
            the last stage, without one it edits the head; ``Result.config`` says which.
        device: Where to run (default: CUDA if available, else CPU).
        progress: Optional ``progress(step, total)`` callback.
        forget_classes: The classes removed entirely (FAMR's ``"retained"`` target spreads over
            the others); ``[]`` for a sample request. Taken from the request object when one is
            given; otherwise needed by methods with ``target="retained"`` unless a retain set
            shows that the forget set's classes are gone.
        anchor: The l2 anchor point of anchored methods (``famr*``, ``neggrad_plus``), when it
            is not ``model`` itself: for a sequential request, pass the original model to
            anchor the second step to it (the certificate then bounds the distance from it).
            Same architecture as ``model``.
        holdout: Examples the model never trained on (a validation split), for methods that
            calibrate against unseen data (``famr_quantile``; the default ``famr`` on a sample
            request, which without it falls back to a weaker recipe and warns).
        kind: What the request removes (``"classes"``, ``"samples"``, ``"random"``,
            ``"concept"``, ``"style"``), which ``famr``'s ``auto`` recipe resolves from.
            Default: the request object's (:attr:`famr.Splits.kind`); with plain data sets,
            ``"samples"`` when ``forget_classes=[]``, ``"classes"`` when classes are listed.
        **config: Fields of the method's config dataclass; unknown keys raise ``ValueError``
            listing the valid ones.

    Returns:
        A :class:`Result` holding the new model, the config, history, time, certificate and
        the names of the parameters that moved. Parameters with ``requires_grad=False`` never
        move.

    Raises:
        ValueError: Unknown method or config key, bad values, missing retain data, empty
            data, labels outside the model's outputs, images the model cannot take, a request
            kind the method does not handle, or non-finite model weights.
        famr.DivergenceError: The objective became NaN/inf during the run.
    """
    entry = _method(method)
    cfg = make_config(entry.meta["config"], config)
    kind = _request_kind(forget, forget_classes, kind)
    forget, retain, forget_classes = _request_parts(
        forget, retain, forget_classes, takes_retain(entry)
    )
    resolve = entry.meta.get("resolve")
    if resolve is not None:  # the config's "auto" fields, from what the request holds
        held = {"retain": retain, "holdout": holdout, "anchor": anchor}
        cfg = resolve(cfg, {name for name, value in held.items() if value is not None}, kind)
    if "retain" in entry.meta["needs"] and retain is None:
        raise ValueError(f"method {entry.name!r} needs retain data; pass retain=...")
    if "holdout" in entry.meta["needs"] and holdout is None:
        raise ValueError(
            f"method {entry.name!r} needs holdout data (examples the model never trained on); "
            "pass holdout=... (CLI: famr forget --holdout validation)"
        )
    dev = resolve_device(device)
    _check_finite(model)
    work = copy.deepcopy(model).to(dev)
    with in_float32(work), plain_logits(work):
        result = _unlearn_work(
            work, entry, cfg, dev, forget, retain, forget_classes, anchor, holdout, progress
        )
    for p in work.parameters():
        p.grad = None
    return result


def _retain_buffer(retain, cfg) -> tuple[Dataset | None, bool]:
    """Image files (:mod:`famr.data.files`) for a method that keeps a retain buffer: the buffer's
    rows, drawn as the method draws them, so that only they are decoded (same numbers as on
    the tensor path)."""
    size = getattr(cfg, "buffer_size", None)
    if not isinstance(retain, ImageFiles) or size is None or len(retain) == 0:
        return retain, False
    return retain[buffer_rows(len(retain), size, cfg.seed)], True


def _unlearn_work(work, entry, cfg, dev, forget, retain, forget_classes, anchor, holdout, progress):
    """:func:`unlearn` on its own float32 copy of the model, whose forward returns logits."""
    # image files: only what the method uses is decoded; the labels are read from all of them
    retain_labels = retain.labels if isinstance(retain, ImageFiles) else None
    # a resolved config without a buffer (famr's head recipe) reads no retain image either
    reads_retain = takes_retain(entry) and getattr(cfg, "buffer_size", 0) is not None
    if retain_labels is not None and not reads_retain:
        retain = None
    retain, is_buffer = _retain_buffer(retain, cfg)
    forget_t = _tensors_on(forget, "forget", dev)
    k = num_outputs(work, forget_t[0])
    _check_labels(forget_t[1], "forget", k)
    retain_t = _tensors_on(retain, "retain", dev) if retain is not None else None
    if retain_t is not None:
        _check_labels(retain_t[1], "retain", k)
    retain_y = retain_t[1] if retain_t is not None else None
    if retain_labels is not None:  # every retain example's label, not only the buffer's
        _check_labels(retain_labels, "retain", k)
        retain_y = retain_labels
    forget_classes = _removed_classes(entry, cfg, forget_t[1], retain_y, forget_classes)
    if forget_classes:
        _check_labels(torch.tensor(forget_classes, dtype=torch.long), "forget_classes", k)
    anchor_state = None
    if anchor is not None:
        own = dict(work.named_parameters())
        anchor_state = {n: p.detach().to(dev, torch.float32) for n, p in anchor.named_parameters()}
        if set(own) != set(anchor_state) or any(own[n].shape != anchor_state[n].shape for n in own):
            raise ValueError("the anchor model's parameters do not match the model's")
        if not all(bool(v.isfinite().all()) for v in anchor_state.values()):
            raise ValueError("the anchor model has non-finite weights")
    holdout_t = None
    if holdout is not None:
        holdout_t = _tensors_on(holdout, "holdout", dev)
        _check_labels(holdout_t[1], "holdout", k)
    if getattr(cfg, "buffer_size", 0) is None:  # famr's head recipe: the labels were its use
        retain_t = None
    data = MethodData(forget_t, retain_t, k, forget_classes, anchor_state, holdout_t, is_buffer)
    wants_certificate = entry.meta["certificate"] and getattr(cfg, "certificate", True)
    original = copy.deepcopy(work) if wants_certificate else None
    before = {n: p.detach().clone() for n, p in work.named_parameters()}
    frozen = {n for n, p in work.named_parameters() if not p.requires_grad}
    history, seconds = _seeded_run(
        cfg.seed, dev, lambda: entry.obj(work, data, cfg, device=dev, progress=progress)
    )
    work.eval()
    bad = [n for n, p in work.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:  # the last step can diverge after the loop's last loss check
        raise DivergenceError(
            f"the run left non-finite weights in {bad[0]!r}; lower lr, set grad_clip, or raise "
            "the anchor strength"
        )
    moved = [n for n, p in work.named_parameters() if not torch.equal(p.detach(), before[n])]
    if frozen & set(moved):  # a method that ignores requires_grad is a bug, not a result
        raise RuntimeError(
            f"method {entry.name!r} moved frozen parameters {sorted(frozen & set(moved))[:4]}"
        )
    certificate = None
    if original is not None:
        from .methods.famr import target_support

        start = time.perf_counter()
        checks = {}
        if retain_t is not None:  # output deviation on (a sample of) retained images
            keep = torch.randperm(
                len(retain_t[1]), generator=torch.Generator().manual_seed(cfg.seed)
            )[:2000]
            checks["retain"] = retain_t[0][keep.to(dev)]
        support = target_support(cfg, data)
        anchor_model = None
        if anchor is not None:
            anchor_model = copy.deepcopy(work)
            with torch.no_grad():
                for n, p in anchor_model.named_parameters():
                    p.copy_(anchor_state[n])
        certificate = certify(
            original,
            work,
            forget_t[0],
            cfg.lam,
            support,
            k,
            check_images=checks,
            anchor=anchor_model,
        )
        certificate["seconds"] = time.perf_counter() - start
    return Result(work, entry.name, cfg, history, seconds, certificate, moved)


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    **config: Any,
) -> Result:
    """Train ``model`` (a copy of it) with cross-entropy on ``dataset``.

    Args:
        model: The classifier to train; never modified.
        dataset: Data set of ``(image, label)`` pairs.
        device: Where to run.
        progress: Optional ``progress(step, total)`` callback.
        **config: Fields of :class:`famr.config.TrainConfig`.

    Returns:
        A :class:`Result` with method ``"train"``.
    """
    cfg = make_config(TrainConfig, config)
    dev = resolve_device(device)
    work = copy.deepcopy(model).to(dev)
    data = _tensors_on(dataset, "training", dev)
    with in_float32(work), plain_logits(work):
        _check_labels(data[1], "training", num_outputs(work, data[0]))
        history, seconds = _seeded_run(
            cfg.seed, dev, lambda: fit_cross_entropy(work, data, cfg, device=dev, progress=progress)
        )
    work.eval()
    for p in work.parameters():
        p.grad = None
    return Result(work, "train", cfg, history, seconds)


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> SplitOutputs:
    """The model's logits on ``dataset`` (eval mode, float32, on the CPU) with its labels.

    Raises:
        ValueError: The images hold NaN/inf, the model cannot take them, or a label lies
            outside the model's K outputs (a bad evaluation set is never scored).
    """
    dev = resolve_device(device)
    if isinstance(dataset, ImageFiles):  # read batch by batch, never held whole
        return _predict_files(model, dataset, dev, batch_size)
    images, labels = to_tensors(dataset)
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in model.parameters()):
        model = copy.deepcopy(model).float()  # float64 / bfloat16 models score in float32
    _check_labels(labels, "evaluation", num_outputs(model, images[:1].to(dev)))
    was_training = model.training
    model.eval()

    def logits(part: Tensor) -> Tensor:
        chunks = [
            model(to_float(part[start : start + batch_size].to(dev))).float()
            for start in range(0, len(part), batch_size)
        ]
        return torch.cat(chunks)

    try:
        # under torchrun each rank predicts its share; every rank gets all the logits
        with plain_logits(model):
            out = distributed.gather_rows(logits, images)
    finally:
        model.train(was_training)
    return SplitOutputs(out.cpu(), labels.cpu())


@torch.no_grad()
def _predict_files(model: nn.Module, files: ImageFiles, dev: torch.device, batch_size: int):
    """:func:`predict` on image files: decoded by worker processes a batch at a time (each rank
    of a ``torchrun`` run reads its strided share of the files)."""
    if len(files) == 0:
        raise ValueError("the evaluation set is empty")
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in model.parameters()):
        model = copy.deepcopy(model).float()
    # a blank image of the files' shape checks the model takes them (no file read twice)
    blank = torch.zeros((1, 3, files.image_size, files.image_size), dtype=torch.uint8)
    _check_labels(files.labels, "evaluation", num_outputs(model, blank.to(dev)))
    was_training = model.training
    model.eval()

    def logits(rows: Tensor) -> Tensor:
        chunks = [
            model(to_float(x.to(dev, non_blocking=True))).float()
            for x in batches(files[rows], batch_size, pin=dev.type == "cuda")
        ]
        return torch.cat(chunks)

    try:
        with plain_logits(model):
            out = distributed.gather_rows(logits, torch.arange(len(files)))
    finally:
        model.train(was_training)
    return SplitOutputs(out.cpu(), files.labels.clone())


def choose_metrics(available: set[str], metrics: list[str] | None = None) -> list[Entry]:
    """The metric entries to compute given the available splits (all that fit, or ``metrics``)."""
    if metrics is None:
        return [e for e in METRICS if set(e.meta["splits"]) <= available]
    chosen = [METRICS.get(name) for name in metrics]
    for e in chosen:
        missing = sorted(set(e.meta["splits"]) - available)
        if missing:
            raise ValueError(f"metric {e.name!r} needs the split(s) {missing}")
    return chosen


def metrics_from_outputs(
    outputs: dict[str, SplitOutputs],
    metrics: list[str] | None = None,
    reference: dict[str, float] | None = None,
) -> dict[str, float]:
    """Compute metrics from precomputed model outputs per split (see :func:`evaluate`)."""
    results: dict[str, float] = {}
    for e in choose_metrics(set(outputs), metrics):
        value = e.obj(outputs)
        results.update(value if isinstance(value, dict) else {e.name: value})
    if reference is not None:
        results.update(gaps(results, reference))
    return results


def evaluate(
    model: nn.Module,
    *,
    forget: Dataset | None = None,
    retain: Dataset | None = None,
    test_retain: Dataset | None = None,
    test_forget: Dataset | None = None,
    metrics: list[str] | None = None,
    reference: dict[str, float] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """Compute unlearning metrics of ``model`` on the given splits.

    Args:
        model: The classifier to evaluate (not modified).
        forget, retain, test_retain, test_forget: The evaluation splits; metrics whose splits
            are missing are skipped (or, when named in ``metrics``, raise).
        metrics: Metric names (default: every registered metric the splits allow).
        reference: Metrics of the reference (retrained) model; adds the gaps and ToW.
        device: Where to run the forward passes.
        batch_size: Evaluation batch size.

    Returns:
        ``{metric name: value}``; see ``famr.list_metrics()`` for directions.
    """
    given = {
        "forget": forget,
        "retain": retain,
        "test_retain": test_retain,
        "test_forget": test_forget,
    }
    available = {name for name, ds in given.items() if ds is not None}
    chosen = choose_metrics(available, metrics)
    needed = {s for e in chosen for s in e.meta["splits"]}
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not valid; it must be an integer >= 1")
    dev = resolve_device(device)
    model_device = next(model.parameters()).device
    model = model if model_device == dev else copy.deepcopy(model).to(dev)
    outputs = {
        s: predict(model, given[s], device=dev, batch_size=batch_size) for s in sorted(needed)
    }
    return metrics_from_outputs(outputs, [e.name for e in chosen], reference)
