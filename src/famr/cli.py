"""Command line: ``famr demo | train | forget | verify | import | certify | sweep-lambda | ...``.

Thin handlers over the API. Exit codes: 0 success, 2 bad input (nothing written), 1 a run
that diverged (nothing written), 3 ``certify`` found the run not certified, 4 ``verify`` found
a mismatch, 130 interrupted by SIGINT or SIGTERM (nothing written: outputs are committed
together, only once complete).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import audit, distributed, io
from .api import evaluate, resolve_device, train, unlearn
from .attacks import ATTACKS, AttackData, attack
from .config import TrainConfig, config_dict, make_config
from .data import (
    CIFAR10_COARSE,
    DIGITS_COARSE,
    ClassForget,
    ConceptForget,
    RandomForget,
    SampleForget,
    StyleForget,
    add_style,
    coarsen,
    forget_spec_from_dict,
    hold_out_validation,
    load_dataset,
)
from .data.forget import ForgetSpec, Splits
from .loop import DivergenceError
from .methods import METHODS
from .metrics import METRICS
from .models import create_model, list_models

DEMO_LAMS = (0.01, 0.1, 1.0, 10.0, 100.0)
DEMO_VALIDATION = 0.2
DEMO_FILES = (
    "results.json",
    "report.md",
    "per_class_accuracy.png",
    "confidence.png",
    "lambda_path.png",
)
CERTIFY_FILES = ("certificate.json", "certificate.md")
SWEEP_FILES = ("sweep.json", "sweep.md", "lambda_path.png")
ATTACK_FILES = ("attack.json", "attack.md", "attack.png")


class UsageError(ValueError):
    """Bad command-line input."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2), like every other famr error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _progress_factory(enabled: bool):
    """Per-step callbacks for the optimisation loop: a progress bar when ``enabled``, and in any
    case a check that re-raises an interrupt the signal handler saw but Python swallowed (a
    ``KeyboardInterrupt`` raised inside a finaliser is only reported, never propagated)."""

    def make(label: str):
        if not enabled:

            def check(step: int, total: int) -> None:
                _raise_if_interrupted()

            return check
        from tqdm import tqdm

        # No tqdm monitor thread: Ctrl-C landing between the two acquires of tqdm's write lock
        # leaves it held, and at exit the monitor's atexit join then waits on it forever.
        tqdm.monitor_interval = 0
        bar = None

        def update(step: int, total: int) -> None:
            nonlocal bar
            _raise_if_interrupted()
            if bar is None:
                bar = tqdm(
                    total=total, desc=f"{label:>16}", file=sys.stderr, unit="step", leave=True
                )
            bar.update(step - bar.n)
            if step >= total:
                bar.close()

        return update

    return make


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1)")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value


def _parse_classes(text: str) -> list[int]:
    if not text.strip():
        return []  # the request itself then says there is no class to forget
    parts = [part.strip() for part in text.split(",")]
    # ASCII digits only: int() would also take "٣" (an Arabic-Indic three) as 3
    if not all(re.fullmatch(r"[0-9]{1,9}", part, re.ASCII) for part in parts):
        raise UsageError(
            f"classes {text!r} are not valid; give integers separated by commas, e.g. 3 or 3,5"
        )
    return [int(part) for part in parts]


def _config_values(args: argparse.Namespace, shortcuts: Sequence[str]) -> dict[str, Any]:
    """Merge ``--config FILE``, ``--set key=value`` and shortcut flags (later wins)."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} not found")
        loaded = io.read_json(path, "config file")
        if not isinstance(loaded, dict):
            raise UsageError(f"config file {str(path)!r} must hold a JSON object")
        values.update(loaded)
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise UsageError(f"--set {item!r} is not valid; use key=value")
        key, value = item.split("=", 1)
        values[key.strip().replace("-", "_")] = value
    for name in shortcuts:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return values


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file of config fields")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="set any config field (repeatable)"
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--seed", type=int)


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default="digits", help="data set: digits, cifar10, imagefolder (default digits)"
    )
    parser.add_argument("--data-root", help="folder holding the data set's files")
    parser.add_argument(
        "--classes-file", help="imagefolder: use only the class folders listed (one per line)"
    )
    parser.add_argument(
        "--image-size", type=int, help="imagefolder: side of the centre-cropped images"
    )
    parser.add_argument(
        "--workers", type=int, help="imagefolder: image-decoding worker processes (default 2)"
    )
    parser.add_argument(
        "--coarse",
        choices=sorted(GROUPINGS),
        help="relabel with a documented coarse grouping (cifar10: road vehicles, air & sea, "
        "pets, large animals, small animals); for concept requests",
    )
    parser.add_argument(
        "--style",
        help="render a seeded fraction of every split in a fixed style, e.g. sketch:0.2; for "
        "style requests",
    )
    parser.add_argument("--style-seed", type=int, default=0, help="seed of --style (default 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def _lambda_methods() -> list[str]:
    """Methods with an anchor strength ``lam`` that run on a class request's forget and retain
    sets (what ``sweep-lambda`` varies)."""
    from .config import field_names

    return [
        e.name
        for e in METHODS
        if "lam" in field_names(e.meta["config"]) and set(e.meta["needs"]) <= {"forget", "retain"}
    ]


def build_parser() -> argparse.ArgumentParser:
    """The ``famr`` argument parser."""
    parser = _Parser(prog="famr", description="Post-hoc machine unlearning for image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train, retrain and unlearn one digit with every method; print and save a report",
    )
    demo.add_argument("--forget-class", type=int, default=3, help="digit to forget (default 3)")
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the demo's own files in an existing output folder (nothing else in it)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--arch", default="small_cnn")
    demo.add_argument("--device")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    tr = sub.add_parser("train", help="train a model and save it as a checkpoint")
    _add_data_flags(tr)
    tr.add_argument("--arch", default="small_cnn", help=f"architecture: {', '.join(list_models())}")
    tr.add_argument(
        "--exclude-classes", help="leave these classes out of training (retrain reference)"
    )
    tr.add_argument(
        "--init", help="start from this checkpoint's weights (e.g. one made by famr import)"
    )
    tr.add_argument(
        "--validation",
        type=_fraction,
        metavar="FRACTION",
        help="hold this share of every class out of training (seeded; recorded in the "
        "checkpoint): famr forget then works on the rest, and famr attack fits its linear "
        "probe on it",
    )
    tr.add_argument("--validation-seed", type=int, default=0, help="seed of --validation")
    tr.add_argument("--out", required=True, help="output .safetensors path")
    tr.add_argument("--overwrite", action="store_true")
    tr.add_argument("--quiet", action="store_true")
    _add_config_flags(tr)

    fg = sub.add_parser("forget", help="unlearn classes from a saved model")
    _add_data_flags(fg)
    fg.add_argument(
        "--checkpoint", required=True, help="input .safetensors checkpoint (never modified)"
    )
    what = fg.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", help="class ids to forget, comma separated")
    what.add_argument(
        "--indices",
        help="training examples to forget: a file of training-set indices (integers separated "
        "by spaces, commas or new lines, or a JSON list), or random:FRACTION (e.g. random:0.1)",
    )
    what.add_argument(
        "--concept",
        help="a fine class (name or id) to forget inside its coarse class; needs --coarse",
    )
    what.add_argument(
        "--forget-style",
        action="store_true",
        help="forget the stylised training images; needs --style",
    )
    fg.add_argument(
        "--forget-seed",
        type=int,
        default=0,
        help="seed of the random:FRACTION choice (default 0)",
    )
    fg.add_argument(
        "--audit",
        help="audit record of this request (default: OUT with .audit.json; checked by famr verify)",
    )
    fg.add_argument("--method", default="famr", help=f"method: {', '.join(METHODS.names())}")
    fg.add_argument("--lam", type=float, help="FAMR anchor strength lambda")
    fg.add_argument("--reference", help="checkpoint of a retrained reference, for gaps to retrain")
    fg.add_argument(
        "--holdout",
        choices=["test"],
        help="unseen examples for methods that calibrate on them (famr_matched, "
        "famr_matched_retain, famr_quantile): 'test' = the "
        "test images of the retained classes (the only data a model trained on the whole "
        "training set never saw; the API also takes a validation split)",
    )
    fg.add_argument(
        "--anchor",
        help="l2 anchor point of anchored methods (default: --checkpoint itself). For a second "
        "request, pass the original model and the cumulative request (e.g. --classes 3,5 after "
        "3): the step then solves the whole request anchored to the original, starting from "
        "the previous model",
    )
    fg.add_argument("--out", required=True, help="output .safetensors path")
    fg.add_argument("--overwrite", action="store_true")
    fg.add_argument(
        "--max-retain-drop",
        type=_non_negative,
        default=10.0,
        metavar="POINTS",
        help="refuse (exit 3, nothing written) a result whose test accuracy on the retained "
        "data is more than this many points below the input model's (default 10)",
    )
    fg.add_argument(
        "--write-anyway",
        action="store_true",
        help="write a refused result (not certified, or over --max-retain-drop) regardless; "
        "the checkpoint's metadata and audit record say it was refused",
    )
    fg.add_argument("--quiet", action="store_true")
    _add_config_flags(fg)

    im = sub.add_parser("import", help="convert another code base's weights into a famr checkpoint")
    im.add_argument(
        "--weights",
        required=True,
        help=".safetensors, or a torch.save file of tensors (read with weights_only)",
    )
    im.add_argument("--arch", required=True, help=f"architecture: {', '.join(list_models())}")
    im.add_argument("--num-classes", type=int, default=10)
    im.add_argument("--in-channels", type=int, default=3)
    im.add_argument(
        "--mean", help="input normalisation mean, comma separated (e.g. 0.4914,0.4822,0.4465)"
    )
    im.add_argument("--std", help="input normalisation std, comma separated")
    im.add_argument(
        "--strip-prefix", default="", help="remove this key prefix, e.g. module. (DataParallel)"
    )
    im.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="replace a key prefix (repeatable)",
    )
    im.add_argument(
        "--replace-head",
        action="store_true",
        help="load a classifier with another class count, then give it a fresh "
        "--num-classes head (e.g. ImageNet weights for a 10-class task)",
    )
    im.add_argument("--seed", type=int, default=0, help="seed of a replaced head (default 0)")
    im.add_argument("--out", required=True, help="output .safetensors path")
    im.add_argument("--overwrite", action="store_true")

    ce = sub.add_parser("certify", help="write the FAMR certificate of an unlearned checkpoint")
    _add_data_flags(ce)
    ce.add_argument("--original", required=True, help="checkpoint before unlearning")
    ce.add_argument("--unlearned", required=True, help="checkpoint after unlearning")
    ce.add_argument("--classes", required=True, help="the forgotten class ids, comma separated")
    ce.add_argument(
        "--lam",
        type=float,
        help="anchor strength (default: from the unlearned checkpoint's config)",
    )
    ce.add_argument(
        "--target",
        choices=["uniform", "retained"],
        help="uniform target (default: from its config)",
    )
    ce.add_argument(
        "--out", required=True, help="output folder for certificate.json and certificate.md"
    )
    ce.add_argument("--overwrite", action="store_true")

    ve = sub.add_parser(
        "verify",
        help="check an audit record: file hashes, the forget set, and the forget metrics",
    )
    ve.add_argument("record", help="the .audit.json written by famr forget")
    ve.add_argument("--data-root", help="data folder (default: the one in the record)")
    ve.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    ve.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="largest accepted difference of a re-evaluated metric, in points (default 0.01)",
    )

    sw = sub.add_parser(
        "sweep-lambda", help="run FAMR over a lambda grid; plot forgetting vs retention"
    )
    _add_data_flags(sw)
    sw.add_argument("--checkpoint", required=True)
    sw.add_argument("--classes", required=True)
    sw.add_argument("--lams", default="0.01,0.1,1,10,100", help="comma-separated lambda grid")
    sw.add_argument("--method", default="famr", choices=_lambda_methods())
    sw.add_argument(
        "--out", required=True, help="output folder for sweep.json, sweep.md, lambda_path.png"
    )
    sw.add_argument("--overwrite", action="store_true")
    sw.add_argument("--config")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE")

    at = sub.add_parser(
        "attack",
        help="attack an unlearned checkpoint (linear probe, relearning) beside the original and "
        "a retrained one",
    )
    _add_data_flags(at)
    at.add_argument("--unlearned", required=True, help="the unlearned checkpoint")
    at.add_argument("--original", required=True, help="the checkpoint before unlearning")
    at.add_argument(
        "--retrained",
        help="a checkpoint retrained without the forget set: the level real forgetting reaches",
    )
    request = at.add_mutually_exclusive_group()
    request.add_argument(
        "--classes",
        help="the request (default: the one the unlearned checkpoint's metadata records)",
    )
    request.add_argument("--indices", help="as for famr forget")
    request.add_argument("--concept", help="as for famr forget")
    request.add_argument("--forget-style", action="store_true", help="as for famr forget")
    at.add_argument("--forget-seed", type=int, default=0, help="seed of random:FRACTION")
    at.add_argument(
        "--attacks",
        help=f"comma-separated, from {', '.join(ATTACKS.names())} (default: all)",
    )
    at.add_argument(
        "--set",
        action="append",
        metavar="ATTACK.KEY=VALUE",
        help="an attack option, e.g. relearn.steps=20 or linear_probe.layer=layer3 (repeatable)",
    )
    at.add_argument(
        "--out", required=True, help="output folder for attack.json, attack.md, attack.png"
    )
    at.add_argument("--overwrite", action="store_true")

    sub.add_parser("methods", help="list the unlearning methods")
    sub.add_parser("metrics", help="list the metrics and their directions")
    return parser


def _checkpoint_out(path: str) -> Path:
    out = Path(path)
    if out.suffix != ".safetensors":
        raise UsageError(
            f"--out {path!r} must end in .safetensors (its metadata goes to {out.stem}.json beside it)"
        )
    return out


# Every flag that names a file a command reads. A checkpoint-like input is read with its
# sidecar, so both are protected; nothing any command writes may be one of them.
_CHECKPOINT_INPUTS = (
    "checkpoint",
    "anchor",
    "reference",
    "init",
    "original",
    "unlearned",
    "retrained",
)
_FILE_INPUTS = ("weights", "config", "indices", "classes_file", "record")


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The files ``args`` name as inputs (resolved by :class:`famr.io.Outputs` when checking)."""
    paths = []
    for name in _CHECKPOINT_INPUTS:
        value = getattr(args, name, None)
        if value:
            paths += [Path(value), io.sidecar_path(value)]
    for name in _FILE_INPUTS:
        value = getattr(args, name, None)
        if value and not (name == "indices" and value.startswith("random:")):
            paths.append(Path(value))
    return paths


def _plan(args: argparse.Namespace, files: list[Path]) -> io.Outputs:
    """The command's outputs, checked now (before any work) against its inputs, existing files
    and the folders' writability."""
    return io.Outputs(files, inputs=_inputs(args), overwrite=args.overwrite)


def _folder_outputs(folder: str, names: Sequence[str]) -> list[Path]:
    """The files an output folder receives (only these are ever written or replaced in it)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {folder!r} is a file; give a folder (it receives {names[0]}, ...)")
    return [path / name for name in names]


GROUPINGS = {"cifar10": CIFAR10_COARSE, "digits": DIGITS_COARSE}
STYLES = ("sketch",)


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _data_request(
    args: argparse.Namespace, validation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything that defines the data of a run (stored in audit records, so verify rebuilds
    exactly the same data). ``validation`` is the held-out split the model was trained
    without (``famr train --validation``), recorded in its checkpoint."""
    return {
        "data": args.data,
        "data_root": _absolute(args.data_root),
        "classes_file": _absolute(args.classes_file),
        "image_size": args.image_size,
        "coarse": args.coarse,
        "style": args.style,
        "style_seed": args.style_seed,
        "validation": validation,
    }


def _parse_style(text: str) -> tuple[str, float]:
    kind, _, fraction = text.partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = float("nan")
    if kind not in STYLES or not 0 < value < 1:
        raise UsageError(
            f"--style {text!r} is not valid; give STYLE:FRACTION with STYLE in {', '.join(STYLES)} "
            "and 0 < FRACTION < 1, e.g. sketch:0.2"
        )
    return kind, value


def _build_data(request: dict[str, Any], workers: int | None = None):
    """``(data, derived)``: the data set with its coarse relabelling and style applied;
    ``derived`` holds the fine labels / style masks concept and style requests need."""
    options = {
        "classes_file": request.get("classes_file"),
        "image_size": request.get("image_size"),
        "workers": workers,
    }
    data = load_dataset(request["data"], request.get("data_root"), **options)
    validation = request.get("validation")
    if validation:
        if request.get("coarse") or request.get("style"):
            raise UsageError(
                "a validation split (famr train --validation) cannot be combined with --coarse "
                "or --style yet"
            )
        data = hold_out_validation(data, validation["fraction"], seed=validation["seed"])
    derived: dict[str, Any] = {}
    if request.get("coarse"):
        if request["coarse"] not in GROUPINGS:
            raise UsageError(
                f"--coarse {request['coarse']!r} is not known; choose from {', '.join(GROUPINGS)}"
            )
        derived["coarse"] = coarsen(data, GROUPINGS[request["coarse"]])
        data = derived["coarse"].data
    if request.get("style"):
        _, fraction = _parse_style(request["style"])
        derived["styled"] = add_style(data, fraction, seed=request.get("style_seed") or 0)
        data = derived["styled"].data
    return data, derived


def _load_data(args: argparse.Namespace, validation: dict[str, Any] | None = None):
    return _build_data(_data_request(args, validation), args.workers)[0]


def _splits_for(data, classes: list[int]) -> Splits:
    return ClassForget(classes).split(data.train, data.test, data.num_classes)


def _read_indices(path: str) -> list[int]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"--indices file {path!r} not found (or give random:FRACTION, e.g. random:0.1)"
        )
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--indices file {path!r} is not a readable text file: {err}") from None
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise UsageError(
                f"--indices file {path!r} is not a valid JSON list: {detail}"
            ) from None
        if not isinstance(values, list):
            raise UsageError(f"--indices file {path!r} must hold a JSON list of integers")
    else:
        values = text.replace(",", " ").split()
    from_json = text.lstrip().startswith("[")
    out = []
    for value in values:
        # JSON integers, or ASCII digit tokens in a text file: never a float, a bool, a JSON
        # string or another script's digits (int() would take "٣" as 3)
        if from_json:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = re.fullmatch(r"[+-]?[0-9]+", value, re.ASCII) is not None
        if not ok:
            raise UsageError(
                f"--indices file {path!r} holds {value!r}, which is not an integer index"
            )
        out.append(int(value))
    return out


def _spec_from_dict(forget: dict[str, Any], derived: dict[str, Any]):
    """A recorded spec, rebuilt against the (relabelled / stylised) data."""
    if forget.get("kind") == "concept":
        coarse = derived.get("coarse")
        if coarse is None:
            raise UsageError("a concept request needs the coarse relabelling (--coarse)")
        return ConceptForget(
            int(forget["concept"]), coarse.fine_train, coarse.fine_test, forget.get("name", "")
        )
    if forget.get("kind") == "style":
        styled = derived.get("styled")
        if styled is None:
            raise UsageError("a style request needs the stylised data (--style)")
        return StyleForget(styled.styled_train, styled.styled_test)
    return forget_spec_from_dict(forget)


def _forget_spec(args: argparse.Namespace, derived: dict[str, Any]) -> ForgetSpec:
    if args.classes is not None:
        return ClassForget(_parse_classes(args.classes))
    if args.concept is not None:
        coarse = derived.get("coarse")
        if coarse is None:
            raise UsageError("--concept needs --coarse GROUPING (the coarse labels it lives in)")
        names = coarse.fine_names
        concept = args.concept
        if concept.isdigit() and int(concept) < len(names):
            index = int(concept)
        elif concept in names:
            index = names.index(concept)
        else:
            raise UsageError(
                f"--concept {concept!r} is not a fine class; choose from {', '.join(names)}"
            )
        return ConceptForget(index, coarse.fine_train, coarse.fine_test, names[index])
    if args.forget_style:
        styled = derived.get("styled")
        if styled is None:
            raise UsageError("--forget-style needs --style STYLE:FRACTION (the stylised data)")
        return StyleForget(styled.styled_train, styled.styled_test)
    text = args.indices
    if text.startswith("random:"):
        try:
            fraction = float(text.split(":", 1)[1])
        except ValueError:
            raise UsageError(
                f"--indices {text!r} is not valid; give random:FRACTION with 0 < FRACTION < 1"
            ) from None
        spec = RandomForget(fraction, args.forget_seed)
        spec.validate()
        return spec
    return SampleForget(_read_indices(text))


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when possible (records move with their folder)."""
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def _floats(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--{name} {text!r} is not valid; give numbers separated by commas"
        ) from None


def cmd_import(args: argparse.Namespace) -> int:
    from .models.external import load_external

    out = _checkpoint_out(args.out)
    plan = _plan(args, [out, io.sidecar_path(out)])
    renames = []
    for item in args.rename:
        if "=" not in item:
            raise UsageError(f"--rename {item!r} is not valid; use OLD=NEW")
        renames.append(tuple(item.split("=", 1)))
    arch_args: dict[str, Any] = {"num_classes": args.num_classes, "in_channels": args.in_channels}
    for name in ("mean", "std"):
        values = _floats(getattr(args, name), name)
        if values is not None:
            arch_args[name] = values
    from .loop import head_name
    from .models.external import map_keys, read_state_dict
    from .models.hub import replace_head

    model = create_model(args.arch, **arch_args)
    state = read_state_dict(args.weights)
    replaced = None
    if args.replace_head:
        # build the model with the file's class count, load it, then swap in a fresh head
        own_head = head_name(model) + ".weight"
        prefix = getattr(model, "external_prefix", "")
        mapped = map_keys(state, strip_prefix=args.strip_prefix, renames=renames)
        key = next((k for k in (own_head, own_head.removeprefix(prefix)) if k in mapped), None)
        if key is None:
            raise UsageError(
                f"--replace-head: the weights have no classifier {own_head!r}; map the keys "
                "with --strip-prefix / --rename"
            )
        source_classes = int(mapped[key].shape[0])
        model = create_model(args.arch, **{**arch_args, "num_classes": source_classes})
        replaced = {"from_classes": source_classes, "seed": args.seed}
    load_external(model, args.weights, strip_prefix=args.strip_prefix, renames=renames, state=state)
    if replaced is not None:
        replace_head(model, args.num_classes, seed=args.seed)
    meta = {
        "arch": args.arch,
        "arch_args": arch_args,
        "imported_from": str(args.weights),
        "key_mapping": {"strip_prefix": args.strip_prefix, "renames": renames},
        "replaced_head": replaced,
    }
    with plan:
        io.save_checkpoint(out, model, meta, stage=plan)
        plan.commit()
    print(f"imported {args.weights} as {args.arch}; saved {out}")
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    from .report import certificate_markdown
    from .theory import certify

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, CERTIFY_FILES))
    original, _ = io.load_checkpoint(args.original)
    unlearned, meta = io.load_checkpoint(args.unlearned)
    _check_certify_request(args, meta)
    config = meta.get("config") or {}
    lam = args.lam if args.lam is not None else config.get("lam")
    target = args.target or config.get("target", "uniform")
    if lam is None:
        raise UsageError("the unlearned checkpoint records no lambda (not a FAMR run); pass --lam")
    if not (isinstance(lam, (int, float)) and lam == lam and lam >= 0 and lam != float("inf")):
        raise UsageError(f"lam={lam!r} is not valid; it must be a finite number >= 0")
    data = _load_data(args, meta.get("validation"))
    classes = _parse_classes(args.classes)
    splits = _splits_for(data, classes)
    support = None
    if target == "retained":
        import torch

        # classes forgotten by earlier requests were left out of the run's target too
        support = torch.ones(data.num_classes, dtype=torch.bool)
        support[sorted(set(classes) | set(meta.get("forgotten_classes", [])))] = False
    checks = {
        "retain": splits.retain.tensors[0][:2000],
        "test_retain": splits.test_retain.tensors[0],
    }
    if splits.test_forget is not None:
        checks["test_forget"] = splits.test_forget.tensors[0]
    cert = certify(
        original,
        unlearned,
        splits.forget.tensors[0],
        float(lam),
        support,
        data.num_classes,
        check_images=checks,
    )
    payload = {
        "original": str(args.original),
        "unlearned": str(args.unlearned),
        "forget": {"classes": classes},
        "target": target,
        "certificate": cert,
    }
    lines = [
        f"# FAMR certificate: {args.unlearned}",
        "",
        certificate_markdown(cert),
        "",
        "## Output deviation",
        "",
        "| data | mean KL | max KL | changed predictions |",
        "|---|---:|---:|---:|",
    ]
    for name, dev in cert["output_deviation"].items():
        lines.append(
            f"| {name} | {dev['mean_kl']:.4g} | {dev['max_kl']:.4g} | {100 * dev['changed_predictions']:.2f} % |"
        )
    if "newton" in cert and "cosine" in cert["newton"]:
        n = cert["newton"]
        lines += [
            "",
            "## Newton (influence) step vs the achieved solution",
            "",
            f"- cosine {n['cosine']:.4f}, relative error {n['relative_error']:.4g}",
            f"- objective at the Newton step {n['objective_at_newton_step']:.6g} vs achieved {cert['objective_after']:.6g}",
        ]
    with plan:
        plan.write_text(out / "certificate.json", io.json_text(payload))
        plan.write_text(out / "certificate.md", "\n".join(lines) + "\n")
        plan.commit()
    print(certificate_markdown(cert))
    print(f"wrote {out}/certificate.json and certificate.md")
    return 0 if cert["certified"] else 3


def _check_certify_request(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """A certificate is about one request and one pair of models: ``--classes`` must be the
    classes the unlearned checkpoint's metadata says it forgot, and ``--original`` the model it
    was made from (or anchored to), whenever the metadata records them."""
    classes = sorted(set(_parse_classes(args.classes)))
    recorded = meta.get("forget")
    if isinstance(recorded, dict):
        kind = recorded.get("kind", "classes")
        if kind != "classes":
            raise UsageError(
                f"--unlearned {args.unlearned!r} forgot a {kind!r} request; certify checks "
                "class requests only"
            )
        if sorted(recorded.get("classes", [])) != classes:
            raise UsageError(
                f"--classes {args.classes!r} is not the request recorded in --unlearned's "
                f"metadata (classes {recorded.get('classes')}); certify that request"
            )
    known = {meta.get("source_sha256"), (meta.get("anchor") or {}).get("sha256")} - {None}
    if known and io.sha256_file(args.original) not in known:
        raise UsageError(
            f"--original {args.original!r} is not the model --unlearned was made from or "
            f"anchored to (recorded sha256 {', '.join(sorted(known))})"
        )


def cmd_sweep_lambda(args: argparse.Namespace) -> int:
    from .experiment import lambda_path
    from .report import lambda_path_markdown, plot_lambda_path

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, SWEEP_FILES))
    lams = _floats(args.lams, "lams") or []
    bad = [v for v in lams if not (v == v and 0 <= v < float("inf"))]
    if not lams or bad:
        raise UsageError(
            f"--lams {args.lams!r} is not valid; give finite numbers >= 0, e.g. 0.01,0.1,1"
        )
    entry = METHODS.get(args.method)
    values = _config_values(args, ())
    config = config_dict(make_config(entry.meta["config"], values, parse=True))
    config.pop("lam")
    model, meta = io.load_checkpoint(args.checkpoint)
    data = _load_data(args, meta.get("validation"))
    splits = _splits_for(data, _parse_classes(args.classes))
    rows = lambda_path(model, splits, lams, method=args.method, device=args.device, **config)
    with plan:
        plan.write_text(
            out / "sweep.json",
            io.json_text({"method": args.method, "config": config, "rows": rows}),
        )
        plan.write_text(out / "sweep.md", lambda_path_markdown(rows) + "\n")
        plot_lambda_path(rows).savefig(
            plan.path_for(out / "lambda_path.png"), dpi=110, format="png"
        )
        plan.commit()
    print(lambda_path_markdown(rows))
    print(f"wrote {out}/sweep.json, sweep.md, lambda_path.png")
    return 0


def _attack_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        name, dot, field = key.partition(".")
        if not sep or not dot:
            raise UsageError(
                f"--set {item!r} is not valid; use ATTACK.KEY=VALUE, e.g. relearn.steps=20"
            )
        ATTACKS.get(name.strip())
        options.setdefault(name.strip(), {})[field.strip().replace("-", "_")] = value
    return {
        name: config_dict(make_config(ATTACKS.get(name).meta["config"], values, parse=True))
        for name, values in options.items()
    }


def cmd_attack(args: argparse.Namespace) -> int:
    from .report import attack_markdown, plot_attacks

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, ATTACK_FILES))
    names = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    for name in names or []:
        ATTACKS.get(name)
    options = _attack_options(args.set)
    paths = {"original": args.original, "retrained": args.retrained, "unlearned": args.unlearned}
    models, metas = {}, {}
    for role, path in paths.items():
        if path:
            models[role], metas[role] = io.load_checkpoint(path)
    validations = {role: meta.get("validation") for role, meta in metas.items()}
    if len({json.dumps(v, sort_keys=True) for v in validations.values()}) > 1:
        raise UsageError(
            f"the checkpoints were trained with different validation splits {validations}; "
            "train them with the same famr train --validation and --validation-seed"
        )
    validation = validations["unlearned"]
    wants_probe = names is None or "linear_probe" in names
    if wants_probe and validation is None:
        raise UsageError(
            "the linear probe needs examples none of the models trained on: train them with "
            "famr train --validation 0.1 (the same for the retrained model), or pass "
            "--attacks relearn"
        )
    data, derived = _build_data(_data_request(args, validation), args.workers)
    if args.classes or args.indices or args.concept or args.forget_style:
        spec = _forget_spec(args, derived)
    elif metas["unlearned"].get("forget"):
        spec = _spec_from_dict(metas["unlearned"]["forget"], derived)
    else:
        raise UsageError("--unlearned records no request: give --classes, --indices, ...")
    splits = spec.split(data.train, data.test, data.num_classes)
    given = AttackData(splits, data.validation, original=models["original"])
    results = {
        role: attack(model, given, names, device=args.device, config=options)
        for role, model in models.items()
    }
    payload = {
        "request": spec.to_dict(),
        "checkpoints": {role: str(path) for role, path in paths.items() if path},
        "validation": validation,
        "attacks": names or [e.name for e in ATTACKS],
        "config": options,
        "results": results,
        "environment": io.environment(),
    }
    with plan:
        plan.write_text(out / "attack.json", io.json_text(payload))
        plan.write_text(out / "attack.md", attack_markdown(results, spec.to_dict()) + "\n")
        plot_attacks(results).savefig(plan.path_for(out / "attack.png"), dpi=110, format="png")
        plan.commit()
    print(attack_markdown(results, spec.to_dict()))
    print(f"wrote {out}/attack.json, attack.md, attack.png")
    return 0


def cmd_methods(_: argparse.Namespace) -> int:
    width = max(len(n) for n in METHODS.names())
    for entry in METHODS:
        needs = "+".join(entry.meta["needs"])
        print(f"{entry.name:<{width}}  [{needs}]  {entry.summary}")
    return 0


def cmd_metrics(_: argparse.Namespace) -> int:
    width = max(len(n) for n in METHODS.names())
    for entry in METRICS:
        print(
            f"{entry.name:<{width}}  {entry.meta['direction']}; retrained model: {entry.meta['retrain']}"
        )
    return 0


def _speed_note(cfg: Any, device: str | None) -> None:
    """Say so when ``bf16=True`` will make a CPU run slower, not faster."""
    if (
        getattr(cfg, "bf16", False)
        and resolve_device(device).type == "cpu"
        and not io.native_bf16()
    ):
        import torch

        print(
            "famr: note: this CPU has no native bfloat16 (kernels "
            f"{torch.backends.cpu.get_cpu_capability()}), so bf16 autocast is emulated: ResNet-20 "
            "trained at 52 images/s with it vs 550 without (BENCHMARKS.md); drop bf16=true "
            "(channels_last may stay)",
            file=sys.stderr,
        )


def cmd_train(args: argparse.Namespace) -> int:
    out = _checkpoint_out(args.out)
    plan = _plan(args, [out, io.sidecar_path(out)])
    values = _config_values(args, ("epochs", "lr", "batch_size", "seed"))
    cfg = make_config(TrainConfig, values, parse=True)
    _speed_note(cfg, args.device)
    validation = None
    if args.validation is not None:
        validation = {"fraction": args.validation, "seed": args.validation_seed}
    data = _load_data(args, validation)
    dataset = data.train
    excluded: list[int] = []
    if args.exclude_classes:
        excluded = _parse_classes(args.exclude_classes)
        dataset = _splits_for(data, excluded).retain
    arch_args: dict[str, Any] = {"num_classes": data.num_classes, "in_channels": data.in_channels}
    if data.mean is not None:
        arch_args.update(mean=list(data.mean), std=list(data.std))
    import torch

    if args.init:
        model, init_meta = io.load_checkpoint(args.init)
        if init_meta["arch"] != args.arch:
            raise UsageError(
                f"--init checkpoint is a {init_meta['arch']!r}, not --arch {args.arch!r}"
            )
        if init_meta["arch_args"].get("num_classes") != data.num_classes:
            raise UsageError(
                f"--init checkpoint has {init_meta['arch_args'].get('num_classes')} classes but "
                f"data set {args.data!r} has {data.num_classes}"
            )
        arch_args = init_meta["arch_args"]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = create_model(args.arch, **arch_args)
    result = train(
        model,
        dataset,
        device=args.device,
        progress=_progress_factory(not args.quiet)("train"),
        **config_dict(cfg),
    )
    test_metrics = evaluate(
        result.model, test_retain=data.test, metrics=["test_retain_acc"], device=args.device
    )
    meta = {
        "arch": args.arch,
        "arch_args": arch_args,
        "dataset": args.data,
        "excluded_classes": excluded,
        "validation": validation,
        "init_checkpoint": str(args.init) if args.init else None,
        "config": config_dict(cfg),
        "metrics": {"test_acc": test_metrics["test_retain_acc"], "seconds": result.seconds},
        "history": result.history,
        "environment": io.environment(),
    }
    with plan:
        io.save_checkpoint(out, result.model, meta, stage=plan)
        plan.commit()
    print(
        f"trained {args.arch} on {args.data} in {result.seconds:.1f} s: test accuracy "
        f"{test_metrics['test_retain_acc']:.2f} %; saved {out}"
    )
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    source = Path(args.checkpoint)
    out = _checkpoint_out(args.out)
    audit_path = Path(args.audit) if args.audit else out.with_suffix(".audit.json")
    plan = _plan(args, [out, io.sidecar_path(out), audit_path])
    entry = METHODS.get(args.method)
    values = _config_values(args, ("epochs", "lr", "batch_size", "seed", "lam"))
    cfg = make_config(entry.meta["config"], values, parse=True)
    _speed_note(cfg, args.device)
    model, meta, source_hashes = io.load_checkpoint_hashed(source)
    data, derived = _build_data(_data_request(args, meta.get("validation")), args.workers)
    spec = _forget_spec(args, derived)
    if meta["arch_args"].get("num_classes") != data.num_classes:
        raise UsageError(
            f"checkpoint has {meta['arch_args'].get('num_classes')} classes but data set {args.data!r} has {data.num_classes}"
        )
    splits = spec.split(data.train, data.test, data.num_classes)
    reference = None
    if args.reference:
        ref_model, _ = io.load_checkpoint(args.reference)
        reference = evaluate(
            ref_model,
            **splits.evaluation_sets(),
            device=args.device,
        )
    anchor_model, anchor_info = None, None
    if args.anchor:
        anchor_model, anchor_meta, anchor_hashes = io.load_checkpoint_hashed(args.anchor)
        if anchor_meta["arch"] != meta["arch"] or anchor_meta["arch_args"] != meta["arch_args"]:
            raise UsageError(
                f"--anchor {args.anchor!r} is a {anchor_meta['arch']!r} {anchor_meta['arch_args']}, "
                f"not the checkpoint's {meta['arch']!r} {meta['arch_args']}"
            )
        anchor_info = {"checkpoint": str(args.anchor), "sha256": anchor_hashes["sha256"]}
    # classes forgotten by earlier requests stay forgotten: FAMR's "retained" target leaves
    # them out too (otherwise a second request would push probability back onto them)
    forgotten = sorted(set(meta.get("forgotten_classes", [])) | set(splits.forget_classes))
    needs_retain = "retain" in entry.meta["needs"]
    result = unlearn(
        model,
        splits.forget,
        splits.retain if needs_retain else None,
        method=entry.name,
        device=args.device,
        progress=_progress_factory(not args.quiet)(entry.name),
        forget_classes=forgotten,
        anchor=anchor_model,
        holdout=splits.test_retain if args.holdout == "test" else None,
        **config_dict(cfg),
    )
    chain = _deviation_chain(meta, source_hashes["sha256"], anchor_info, result.certificate)
    metrics = evaluate(
        result.model,
        **splits.evaluation_sets(),
        reference=reference,
        device=args.device,
    )
    metrics["seconds"] = result.seconds
    checks = _result_checks(model, splits, result.certificate, metrics, args)
    if checks["refused"] and not args.write_anyway:
        print(
            f"famr: refused, nothing written: {checks['refused']}; pass --write-anyway to keep "
            "the model regardless",
            file=sys.stderr,
        )
        return 3
    request = {
        **_data_request(args, meta.get("validation")),
        "forget": spec.to_dict(),
        "forget_count": len(splits.forget_indices),
        "forget_indices_sha256": splits.forget_indices_sha256(),
        "forget_indices_hash": "sha256 of the sorted training-set indices as little-endian int64",
        "holdout": args.holdout,
    }
    environment = io.environment()
    new_meta = {
        "arch": meta["arch"],
        "arch_args": meta["arch_args"],
        "dataset": args.data,
        "forget": spec.to_dict(),
        "forget_indices_sha256": request["forget_indices_sha256"],
        "forgotten_classes": forgotten,
        "validation": meta.get("validation"),
        "method": entry.name,
        "config": config_dict(result.config),
        "seed": result.config.seed,
        "metrics": metrics,
        "certificate": result.certificate,
        "history": result.history,
        "source_checkpoint": str(source),
        "source_sha256": source_hashes["sha256"],
        "anchor": anchor_info,
        "deviation_chain": chain,
        "checks": checks,
        "request": request,  # the audit record's request, checked against it by famr verify
        "environment": environment,
    }
    with plan as stage:
        out_hashes = io.save_checkpoint(out, result.model, new_meta, stage=stage)
        record = {
            "famr_audit_version": audit.AUDIT_VERSION,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "command": "famr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "request": request,
            # checkpoint paths are relative to this record's folder
            "input": {"checkpoint": _relative_to(source, audit_path.parent), **source_hashes},
            "output": {"checkpoint": _relative_to(out, audit_path.parent), **out_hashes},
            "method": entry.name,
            "config": config_dict(result.config),
            "seeds": {"method": result.config.seed, "forget": getattr(spec, "seed", None)},
            "metrics": metrics,
            "certificate": result.certificate,
            "anchor": anchor_info,
            "deviation_chain": chain,
            "checks": checks,
            "environment": environment,
        }
        stage.write_text(audit_path, io.json_text(record))
        stage.commit()
    shown = ", ".join(
        f"{k} {metrics[k]:.2f}"
        for k in ("forget_acc", "test_retain_acc", "test_forget_acc", "mia_efficacy")
        if k in metrics
    )
    print(f"{entry.name}: {shown}; {result.seconds:.2f} s; saved {out}, {io.sidecar_path(out)}")
    print(f"audit record: {audit_path} (check it with: famr verify {shlex.quote(str(audit_path))})")
    if result.certificate is not None:
        c = result.certificate
        print(
            f"certificate: {'certified' if c['certified'] else 'NOT certified'}; ||theta - theta_0|| = {c['distance']:.4g}"
            + (f" <= {c['final_bound']:.4g}" if c["final_bound"] is not None else "")
        )
    return 0


def _result_checks(model, splits: Splits, certificate, metrics, args) -> dict[str, Any]:
    """Whether the result may be written: a FAMR run must be certified, and no method may cost
    the retained classes more than ``--max-retain-drop`` points of test accuracy against the
    input model (a collapse is not an unlearning result, whatever else it scores)."""
    before = evaluate(
        model, test_retain=splits.test_retain, metrics=["test_retain_acc"], device=args.device
    )["test_retain_acc"]
    drop = before - metrics["test_retain_acc"]
    reasons = []
    if certificate is not None and not certificate["certified"]:
        if not certificate["objective_decreased"]:
            why = (
                "the anchored objective did not decrease: "
                f"{certificate['objective_before']:.6g} -> {certificate['objective_after']:.6g}"
            )
        else:
            why = (
                f"lam = {certificate['lam']:g} gives no finite bound on ||theta - theta_0||"
                if not certificate["final_bound"] or not math.isfinite(certificate["final_bound"])
                else "the distance moved exceeds the bound"
            )
        reasons.append(f"the run is not certified ({why})")
    if drop > args.max_retain_drop:
        reasons.append(
            f"test accuracy on the retained data fell {drop:.2f} points ({before:.2f} % -> "
            f"{metrics['test_retain_acc']:.2f} %), more than --max-retain-drop "
            f"{args.max_retain_drop:g}"
        )
    refused = "; and ".join(reasons) or None
    return {
        "input_test_retain_acc": before,
        "retain_drop": drop,
        "max_retain_drop": args.max_retain_drop,
        "refused": refused,
        "written_anyway": bool(refused and args.write_anyway),
    }


def _deviation_chain(meta, source_sha256, anchor_info, certificate) -> dict[str, Any]:
    """How far the output may be from the first model of a sequence of requests.

    Each certified FAMR step bounds ||theta_out - theta_anchor||. Anchored to its input (the
    default), the bounds add up along the chain by the triangle inequality; anchored to the
    first model, the step's own bound already covers the whole distance. ``bound`` is
    ``None`` once any step in the chain had no certificate.
    """
    previous = meta.get("deviation_chain") or {
        "origin_sha256": source_sha256,
        "steps": [],
        "bound": 0.0,
    }
    bound = certificate["final_bound"] if certificate and certificate["certified"] else None
    step = {
        "input_sha256": source_sha256,
        "anchor_sha256": anchor_info["sha256"] if anchor_info else source_sha256,
        "bound": bound,
    }
    if bound is None:
        total = None
    elif anchor_info and anchor_info["sha256"] == previous["origin_sha256"]:
        total = bound
    elif anchor_info:
        total = None  # anchored to a model outside the chain
    else:
        total = None if previous["bound"] is None else previous["bound"] + bound
    return {
        "origin_sha256": previous["origin_sha256"],
        "steps": [*previous["steps"], step],
        "bound": total,
    }


def _load_record(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"audit record {path!r} not found")
    record = io.read_json(file, "audit record")
    try:
        audit.check_record(record)
    except ValueError as err:
        raise UsageError(f"audit record {path!r} is malformed: {err}") from None
    return record


def cmd_verify(args: argparse.Namespace) -> int:
    if not (args.tolerance >= 0):  # also rejects nan
        raise UsageError(f"--tolerance {args.tolerance!r} is not valid; it must be >= 0")
    record = _load_record(args.record)
    folder = Path(args.record).parent
    request = record["request"]
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append((name, ok, detail))

    files = {}
    for side in ("input", "output"):
        path = folder / record[side]["checkpoint"]
        files[side] = path
        for key, file in (("sha256", path), ("metadata_sha256", io.sidecar_path(path))):
            if not file.is_file():
                check(f"{side} {key}", False, f"{file} is missing")
                continue
            actual = io.sha256_file(file)
            check(f"{side} {key}", actual == record[side][key], f"{file}: {actual}")
    output_intact = all(ok for name, ok, _ in checks if name.startswith("output"))
    if output_intact:
        model, output_meta = io.load_checkpoint(files["output"])
        for name, ok, detail in audit.record_checks(record, output_meta):
            check(name, ok, detail)
    data, derived = _build_data(
        {**request, "data_root": _absolute(args.data_root) or request.get("data_root")}
    )
    spec = _spec_from_dict(request["forget"], derived)
    splits = spec.split(data.train, data.test, data.num_classes)
    digest = splits.forget_indices_sha256()
    check("forget indices sha256", digest == request["forget_indices_sha256"], digest)
    count = len(splits.forget_indices)
    check("forget count", count == request["forget_count"], str(count))
    if not output_intact:
        check("forget metrics", False, "not re-evaluated: the output checkpoint does not match")
    else:
        wanted = [m for m in audit.VERIFIED_METRICS if m in record["metrics"]]
        measured = evaluate(model, **splits.evaluation_sets(), metrics=wanted, device=args.device)
        for name in wanted:
            gap = abs(measured[name] - record["metrics"][name])
            check(
                name,
                gap <= args.tolerance,
                f"{measured[name]:.4f} (recorded {record['metrics'][name]:.4f})",
            )
    for name, ok, detail in checks:
        print(f"{'ok      ' if ok else 'MISMATCH'} {name}: {detail}")
    print(f"not checked (informational): {', '.join(audit.UNCHECKED)}")
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        print(f"famr verify: {len(failed)} mismatch(es): {', '.join(failed)}", file=sys.stderr)
        return 4
    print(f"verified {args.record}: {len(checks)} checks passed")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .experiment import run_class_forgetting
    from .report import markdown_table, plot_confidence, plot_per_class_accuracy, report_markdown

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, DEMO_FILES))
    # a fifth of the training set is held out of all training: the attacks' linear probe is
    # fit on it (never on the test set)
    data = hold_out_validation(load_dataset("digits"), DEMO_VALIDATION, seed=args.seed)
    ClassForget(args.forget_class).validate(data.num_classes)
    resolve_device(args.device)
    experiment = run_class_forgetting(
        data,
        [args.forget_class],
        arch=args.arch,
        seed=args.seed,
        device=args.device,
        progress=_progress_factory(not args.quiet),
    )
    from .experiment import lambda_path
    from .report import lambda_path_markdown, plot_lambda_path

    splits = ClassForget(args.forget_class).split(data.train, data.test, data.num_classes)
    path = lambda_path(
        experiment.models["original"], splits, DEMO_LAMS, device=args.device, seed=args.seed
    )
    results = {**experiment.results, "lambda_path": path, "environment": io.environment()}
    command = (
        "famr " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if sys.argv[1:2] == ["demo"]
        else "famr demo"
    )
    with plan:
        plan.write_text(out / "results.json", io.json_text(results))
        report = report_markdown(results, command)
        report += (
            "\n## The lambda path of `famr`\n\n"
            + lambda_path_markdown(path)
            + "\n\n![lambda path](lambda_path.png)\n"
        )
        plan.write_text(out / "report.md", report)
        figures = {
            "per_class_accuracy.png": plot_per_class_accuracy(results),
            "confidence.png": plot_confidence(experiment.confidences),
            "lambda_path.png": plot_lambda_path(path),
        }
        for name, figure in figures.items():
            figure.savefig(plan.path_for(out / name), dpi=110, format="png")
        plan.commit()
    print(markdown_table(results["runs"]))
    famr_run = results["runs"].get("famr")
    if famr_run and "certificate" in famr_run:
        c = famr_run["certificate"]
        print(
            f"\nFAMR certificate: {'certified' if c['certified'] else 'NOT certified'}; "
            f"||theta - theta_0|| = {c['distance']:.4g} <= {c['final_bound']:.4g} (a priori {c['a_priori_bound']:.4g})"
        )
    print(
        f"\nwrote {out}/results.json, report.md, per_class_accuracy.png, confidence.png, lambda_path.png"
    )
    return 0


HANDLERS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "forget": cmd_forget,
    "verify": cmd_verify,
    "import": cmd_import,
    "certify": cmd_certify,
    "sweep-lambda": cmd_sweep_lambda,
    "attack": cmd_attack,
    "methods": cmd_methods,
    "metrics": cmd_metrics,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting."""
    # torch.func's Hessian-vector products import a torch module that still calls the
    # deprecated torch.jit.script: a warning about torch's own code, not the user's command
    warnings.filterwarnings(
        "ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning
    )
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    previous = {}
    _INTERRUPT.clear()
    io.forget_committed()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM takes the same clean path as Ctrl-C: temporary files removed, nothing written
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _interrupt)
    started_group = False
    try:
        started_group = _start_process_group(args)
        with contextlib.ExitStack() as stack:
            if not distributed.is_main():  # under torchrun only rank 0 prints and writes
                stack.enter_context(
                    contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w")))
                )
                if hasattr(args, "quiet"):
                    args.quiet = True
            return HANDLERS[args.command](args)
    except (ValueError, OSError) as err:  # FileNotFoundError, FileExistsError, PermissionError, ...
        message = " ".join(str(err).split())
        print(f"famr: error: {message}", file=sys.stderr)
        return 2
    except DivergenceError as err:
        print(f"famr: run diverged, nothing written: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        written = io.committed_outputs()
        if written:  # held back while the outputs were placed, delivered right after
            print(
                "famr: interrupted after the run finished; its outputs were written whole: "
                + ", ".join(map(str, written)),
                file=sys.stderr,
            )
            return 0
        print(
            "famr: interrupted; nothing written (outputs are only ever written whole, at the "
            "end of a run)",
            file=sys.stderr,
        )
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if started_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _start_process_group(args: argparse.Namespace) -> bool:
    """Join the process group when run under torchrun (``WORLD_SIZE`` > 1): NCCL with one GPU
    per process when CUDA is used, gloo on CPUs. Returns whether a group was started."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    device = resolve_device(getattr(args, "device", None))
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
        dist.init_process_group("nccl", device_id=torch.device(f"cuda:{local}"))
    else:
        dist.init_process_group("gloo")
    return True


_INTERRUPT = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    _INTERRUPT.set()
    raise KeyboardInterrupt(f"signal {signum}")


def _raise_if_interrupted() -> None:
    if _INTERRUPT.is_set():
        raise KeyboardInterrupt("interrupted")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
