"""``famr forget``: one unlearning request, its checkpoint and its audit record."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import audit, io
from ..api import evaluate, unlearn
from ..config import config_dict, make_config
from ..data.files import (
    EVAL_SAMPLE,
    RETAIN_LIMIT,
    evaluation_sets,
    images_decoded,
    materialise,
    rows,
    sample,
    subset,
)
from ..methods import METHODS, takes_retain
from ..methods.famr_auto import SAMPLE_KINDS, FamrRecipeWarning
from .common import (
    UsageError,
    _build_data,
    _check_data_fits,
    _checkpoint_out,
    _config_values,
    _data_request,
    _forget_spec,
    _plan,
    _progress_factory,
    _relative_to,
    _speed_note,
)


def cmd_forget(args: argparse.Namespace) -> int:
    source = Path(args.checkpoint)
    out = _checkpoint_out(args.out)
    audit_path = Path(args.audit) if args.audit else out.with_suffix(".audit.json")
    if args.holdout == "test":
        raise UsageError(
            "--holdout test would calibrate the stopping rule on the test images that are then "
            "scored; train the model with famr train --validation 0.1 and pass --holdout validation"
        )
    plan = _plan(args, [out, io.sidecar_path(out), audit_path])
    entry = METHODS.get(args.method)
    if args.holdout and not _reads_holdout(entry):
        users = [n for n in METHODS.names() if _reads_holdout(METHODS.get(n))]
        raise UsageError(
            f"--holdout: method {entry.name!r} does not use held-out data; the methods that "
            f"do: {', '.join(users)}"
        )
    values = _config_values(args, ("epochs", "lr", "batch_size", "seed", "lam"))
    cfg = make_config(entry.meta["config"], values, parse=True)
    _speed_note(cfg, args.device)
    decoded_before = images_decoded()
    model, meta, source_hashes = io.load_checkpoint_hashed(source)
    earlier = meta.get("forgotten_classes", [])
    if earlier and args.classes is None:
        flags = ("indices", "concept", "forget_style")
        given = next(
            (
                f"--{f.replace('_', '-')}"
                for f in flags
                if getattr(args, f, None) not in (None, False)
            ),
            "this request",
        )
        raise UsageError(
            f"{given}: checkpoint {str(source)!r} forgot classes {earlier} in an earlier "
            "request, and a request that removes no whole class cannot follow one (its forget and "
            "retain sets would still hold those classes); run it on the checkpoint "
            "before the class request, or forget more classes with --classes"
        )
    data, derived = _build_data(_data_request(args, meta.get("validation")), args.workers)
    if args.holdout == "validation" and data.validation is None:
        raise UsageError(
            f"--holdout validation: checkpoint {str(source)!r} records no validation split; "
            "train it with famr train --validation 0.1"
        )
    spec = _forget_spec(args, derived)
    kind = spec.to_dict()["kind"]
    holdout_choice = args.holdout
    recipe = _resolved_recipe(entry, cfg, kind) if holdout_choice is not None else None
    if recipe not in (None, "quantile"):
        raise UsageError(
            f"--holdout: famr runs its {recipe!r} recipe on a "
            f"{kind} request, which does not use held-out data (only a sample request's "
            "'quantile' recipe does)"
        )
    if holdout_choice is None and _wants_validation(cfg, kind, data):
        # the default famr on a sample request: the checkpoint's validation split gives its
        # per-example targets (the quantile recipe); said here, even under --quiet, and kept
        # in the audit record
        holdout_choice = "validation"
        print(
            "famr: a sample request: famr uses the checkpoint's validation split as held-out "
            "data (--holdout validation) for its per-example targets (quantile recipe); "
            "--set recipe=last_stage runs without it",
            file=sys.stderr,
        )
    _check_data_fits(meta, data, "the checkpoint")
    splits = spec.split(data.train, data.test, data.num_classes)
    eval_sample, retain_limit = _sampling(args, data.path)
    # each set decoded once (on the file path, only these): the method and the metrics share
    # the forget set, and the evaluation samples serve every evaluation below
    sets = {k: materialise(v) for k, v in evaluation_sets(splits, eval_sample).items()}
    reference = None
    if args.reference:
        ref_model, _ = io.load_checkpoint(args.reference)
        reference = evaluate(ref_model, **sets, device=args.device)
    anchor_model, anchor_info = _load_anchor(args.anchor, meta)
    # classes forgotten by earlier requests stay forgotten: FAMR's "retained" target leaves
    # them out too (otherwise a second request would push probability back onto them)
    forgotten = sorted(set(meta.get("forgotten_classes", [])) | set(splits.forget_classes))
    retain = None
    if takes_retain(entry):  # a method with a buffer draws it from all of them
        if hasattr(cfg, "buffer_size"):
            retain, retain_limit = splits.retain, None
        else:
            retain = sample(splits.retain, retain_limit, cfg.seed)
    else:
        retain_limit = None  # the method reads no retain data
    with _recipe_warnings_in_one_line():
        result = unlearn(
            model,
            sets["forget"],
            retain,
            method=entry.name,
            device=args.device,
            progress=_progress_factory(not args.quiet)(entry.name),
            forget_classes=forgotten,
            anchor=anchor_model,
            holdout=_holdout(holdout_choice, data, forgotten, retain_limit),
            kind=kind,
            **config_dict(cfg),
        )
    chain = audit.deviation_chain(meta, source_hashes["sha256"], anchor_info, result.certificate)
    metrics = evaluate(result.model, **sets, reference=reference, device=args.device)
    metrics["seconds"] = result.seconds
    checks = _result_checks(model, sets["test_retain"], result.certificate, metrics, args)
    if checks["refused"] and not args.write_anyway:
        print(
            f"famr: refused, nothing written: {checks['refused']}; pass --write-anyway to keep "
            "the model regardless",
            file=sys.stderr,
        )
        return 3
    request = audit.request_record(
        _data_request(args, meta.get("validation")), spec, splits, holdout_choice
    )
    # what the run read: verify re-draws the same evaluation sample
    request.update(data_path_used=data.path, eval_sample=eval_sample, retain_limit=retain_limit)
    new_meta = audit.output_metadata(
        meta,
        request,
        result,
        forgotten_classes=forgotten,
        metrics=metrics,
        source=str(source),
        source_sha256=source_hashes["sha256"],
        anchor=anchor_info,
        chain=chain,
        checks=checks,
        environment=io.environment(),
    )
    new_meta["images_decoded"] = images_decoded() - decoded_before  # by this run
    with plan as stage:
        out_hashes = io.save_checkpoint(out, result.model, new_meta, stage=stage)
        record = audit.build_record(
            new_meta,
            # checkpoint paths are relative to the record's folder (they move together)
            input_entry={"checkpoint": _relative_to(source, audit_path.parent), **source_hashes},
            output_entry={"checkpoint": _relative_to(out, audit_path.parent), **out_hashes},
            forget_seed=getattr(spec, "seed", None),
            command="famr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        stage.write_text(audit_path, io.json_text(record))
        stage.commit()
    _say_saved(entry, metrics, result, out, audit_path)
    return 0


def _sampling(args: argparse.Namespace, path: str) -> tuple[int | None, int | None]:
    """``(eval_sample, retain_limit)``: the flags' counts (``None`` = all), by default the
    file path's bounds (:mod:`famr.data.files`) and everything on the tensor path."""
    defaults = {"eval_sample": EVAL_SAMPLE, "retain_limit": RETAIN_LIMIT}
    values = []
    for name, default in defaults.items():
        given = getattr(args, name, None)
        values.append(None if given == "all" else given or (default if path == "files" else None))
    return values[0], values[1]


def _reads_holdout(entry) -> bool:
    """The method needs held-out data, or uses it when given (the default famr)."""
    return "holdout" in entry.meta["needs"] or "holdout" in entry.meta.get("uses", ())


def _resolved_recipe(entry, cfg, kind: str) -> str | None:
    """The recipe famr's ``auto`` resolves to for this request given held-out data (``None``
    for a method without recipes)."""
    resolve = entry.meta.get("resolve")
    if resolve is None:
        return None
    return resolve(cfg, {"retain", "holdout"}, kind).recipe


@contextlib.contextmanager
def _recipe_warnings_in_one_line():
    """famr's recipe warning as one ``famr: warning:`` line on stderr, the moment it is
    raised; every other warning, and the warning filters (``-W``, ``PYTHONWARNINGS``), as
    Python has them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FamrRecipeWarning):
            print(f"famr: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _wants_validation(cfg, kind: str, data) -> bool:
    """The default famr (``recipe="auto"``) on a sample request, with a validation split
    recorded: it resolves to the quantile recipe when handed that split."""
    return (
        getattr(cfg, "recipe", None) == "auto"
        and kind in SAMPLE_KINDS
        and data.validation is not None
    )


def _holdout(choice: str | None, data, forgotten: list[int], limit: int | None):
    """``--holdout validation``: the validation split's images of the retained classes (the
    checkpoint never trained on them, and they are never scored); at most ``limit`` of them."""
    if choice is None:
        return None
    images, labels = rows(data.validation, name="validation")
    keep = ~torch.isin(labels, torch.tensor(forgotten, dtype=labels.dtype))
    return sample(subset(images, labels, keep), limit)


def _load_anchor(path: str | None, meta: dict[str, Any]):
    """``(model, audit entry)`` of ``--anchor`` (``(None, None)`` without one): the same
    architecture as the checkpoint, or a usage error."""
    if not path:
        return None, None
    model, anchor_meta, hashes = io.load_checkpoint_hashed(path)
    if anchor_meta["arch"] != meta["arch"] or anchor_meta["arch_args"] != meta["arch_args"]:
        raise UsageError(
            f"--anchor {path!r} is a {anchor_meta['arch']!r} {anchor_meta['arch_args']}, "
            f"not the checkpoint's {meta['arch']!r} {meta['arch_args']}"
        )
    return model, {"checkpoint": str(path), "sha256": hashes["sha256"]}


def _say_saved(entry, metrics: dict[str, Any], result, out: Path, audit_path: Path) -> None:
    shown = ", ".join(
        f"{k} {metrics[k]:.2f}"
        for k in ("forget_acc", "test_retain_acc", "test_forget_acc", "mia_efficacy")
        if k in metrics
    )
    recipe = getattr(result.config, "recipe", None)  # what famr's "auto" resolved to
    ran = entry.name
    if "preset_of" in entry.meta:  # a preset names its base, not the recipe it fixes
        ran += f" (a preset of {entry.meta['preset_of']})"
    elif recipe:
        ran += f" ({recipe} recipe)"
    print(f"{ran}: {shown}; {result.seconds:.2f} s; saved {out}, {io.sidecar_path(out)}")
    print(f"audit record: {audit_path} (check it with: famr verify {shlex.quote(str(audit_path))})")
    if result.certificate is not None:
        c = result.certificate
        print(
            f"certificate: {'certified' if c['certified'] else 'NOT certified'}; ||theta - theta_0|| = {c['distance']:.4g}"
            + (f" <= {c['final_bound']:.4g}" if c["final_bound"] is not None else "")
        )


def _result_checks(model, test_retain, certificate, metrics, args) -> dict[str, Any]:
    """:func:`famr.audit.result_checks` against the input model's retained test accuracy (on
    the same images)."""
    before = evaluate(
        model, test_retain=test_retain, metrics=["test_retain_acc"], device=args.device
    )["test_retain_acc"]
    return audit.result_checks(
        before,
        metrics["test_retain_acc"],
        certificate,
        max_retain_drop=args.max_retain_drop,
        write_anyway=args.write_anyway,
    )
