"""What every command shares: the one-line usage error, progress bars and interrupts, config
flags, the output plan (inputs are never outputs), and the data and request a command names."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import io
from ..api import resolve_device
from ..data import ClassForget
from ..data.forget import Splits
from ..data.request import build_data, parse_classes, spec_from_words


class UsageError(ValueError):
    """Bad command-line input."""


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


def _count_or_all(text: str) -> int | str:
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; give a count >= 1 or 'all'")
    return value


def _parse_classes(text: str) -> list[int]:
    return parse_classes(text)


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
    and the folders' writability; none may lie among the data the command reads."""
    root = getattr(args, "data_root", None)
    if root:
        data = os.path.realpath(root)
        for file in files:
            real = os.path.realpath(file)
            if real == data or real.startswith(data.rstrip(os.sep) + os.sep):
                raise UsageError(
                    f"output {str(file)!r} lies inside --data-root {root!r}; famr never writes "
                    "among the data it reads"
                )
    return io.Outputs(files, inputs=_inputs(args), overwrite=args.overwrite)


# The exit code of a command whose outputs are placed: an interrupt held back while they were
# placed and delivered right after must not change it (certify's 3 stays 3).
EXIT_WHEN_WRITTEN = [0]


def _folder_outputs(folder: str, names: Sequence[str]) -> list[Path]:
    """The files an output folder receives (only these are ever written or replaced in it)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {folder!r} is a file; give a folder (it receives {names[0]}, ...)")
    return [path / name for name in names]


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
        "data_path": args.data_path,
    }


def _build_data(request: dict[str, Any], workers: int | None = None):
    return build_data(request, workers)


def _load_data(args: argparse.Namespace, validation: dict[str, Any] | None = None):
    return _build_data(_data_request(args, validation), args.workers)[0]


def _check_data_fits(meta: dict[str, Any], data: Any, what: str) -> None:
    """The data must be what the checkpoint was built for: as many classes and channels."""
    args = meta["arch_args"]
    for key, have in (("num_classes", data.num_classes), ("in_channels", data.in_channels)):
        if args.get(key) is not None and args.get(key) != have:
            raise UsageError(
                f"{what} has {key}={args.get(key)} but the data set {data.name!r} has {have}; "
                "give the data it was trained on (--data, --data-root, --classes-file, ...)"
            )


def _splits_for(data, classes: list[int]) -> Splits:
    return ClassForget(classes).split(data.train, data.test, data.num_classes)


def _forget_spec(args: argparse.Namespace, derived: dict[str, Any]):
    """The forget spec the request flags name (``--classes``, ``--indices``, ``--concept``,
    ``--forget-style``)."""
    return spec_from_words(
        derived,
        classes=args.classes,
        indices=args.indices,
        concept=args.concept,
        forget_style=bool(args.forget_style),
        forget_seed=args.forget_seed,
    )


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


_INTERRUPT = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    _INTERRUPT.set()
    raise KeyboardInterrupt(f"signal {signum}")


def _raise_if_interrupted() -> None:
    if _INTERRUPT.is_set():
        raise KeyboardInterrupt("interrupted")
