"""What the benchmark scripts share, tested once here: trained-model caching keyed by a hash of
the whole configuration, the one way references are trained, the selection rules that decide
what a table reports, and the writing of results into BENCHMARKS.md.

Like :mod:`famr.io`, this module belongs to the I/O layer (it reads and writes a cache folder
and BENCHMARKS.md): the library's core never imports it; the benchmark scripts are short lists
of runs over the library and this module, with no imports between scripts and nothing run at
import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import io
from ._version import __version__
from .api import Result, evaluate, train, unlearn
from .config import TrainConfig
from .data import ClassForget, ForgetSpec, ImageData
from .models import create_model

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
TRAINING_CODE_VERSION = 1  # bump when training changes in a way that changes the models
# Models the benchmarks' tables were measured against, shipped in the repository (a ResNet-20
# is 1.1 MB; the CIFAR-10 original takes 45 min to train on a 2-core CPU): a read-only second
# cache, searched after the --cache folder (not with FAMR_NO_SHIPPED=1). Absent from an
# installed package (no hit, then).
SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoints"
Log = Callable[[str], None]


def log(message: str) -> None:
    """A time-stamped progress line on stdout (benchmarks only; the library never prints)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def reexec_with_tcmalloc(argv: list[str] | None = None) -> None:
    """Re-run this process with tcmalloc preloaded when it is installed (1.2-2x faster CPU
    training: glibc malloc keeps mapping and unmapping activation buffers; tcmalloc caches
    them). Called first by each script's ``main(argv)``, never at import, and only when the
    script runs as a command (``argv`` None: a caller's ``main([...])`` is never restarted,
    and its ``argv`` never lost); ``FAMR_NO_TCMALLOC=1`` opts out."""
    if argv is not None:
        return
    if os.environ.get("FAMR_NO_TCMALLOC") or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    if os.path.exists(TCMALLOC):
        env = {**os.environ, "LD_PRELOAD": TCMALLOC}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def config_hash(config: dict[str, Any]) -> str:
    """A stable short hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_training(
    cache: Path, key: dict[str, Any], build: Callable[[], tuple[nn.Module, dict]], say: Log = log
) -> tuple[nn.Module, dict[str, Any]]:
    """Load the model trained under ``key`` from ``cache`` (or from the checkpoints shipped in
    ``benchmarks/checkpoints``, :data:`SHIPPED`), or train it with ``build()`` and save it in
    ``cache``.

    Args:
        cache: Cache folder.
        key: The full configuration of the training; its hash names the files.
        build: ``build() -> (model, record)`` trains the model; ``record`` (seconds, history)
            is stored beside it.
        say: Progress messages.

    Returns:
        The model and its record (with ``cached: True`` when it was loaded).
    """
    import fcntl

    name = config_hash(key)
    path = cache / f"{name}.safetensors"

    def load() -> tuple[nn.Module, dict[str, Any]] | None:
        if path.exists() and io.sidecar_path(path).exists():
            model, meta = io.load_checkpoint(path)
            say(f"cache hit {path}: {key.get('label', '')}")
            return model, {**meta["record"], "cached": True}
        shipped = SHIPPED / path.name
        if os.environ.get("FAMR_NO_SHIPPED") == "1":  # a run that times training from scratch
            return None
        if shipped.exists() and io.sidecar_path(shipped).exists():
            try:  # a shipped file that cannot serve (damaged, another key) is trained instead
                model, meta = io.load_checkpoint(shipped)
                if meta.get("key") != json.loads(json.dumps(key)):
                    raise ValueError("its stored key is not this training's")
            except ValueError as err:
                say(f"shipped checkpoint {shipped} not used: {err}")
                return None
            say(f"cache hit {shipped}: {key.get('label', '')}")
            return model, {**meta["record"], "cached": True}
        return None

    hit = load()  # a hit needs no lock (and a read-only cache serves hits)
    if hit is not None:
        return hit
    cache.mkdir(parents=True, exist_ok=True)
    # One process trains a given model; the others wait for it. An flock, not the file's mere
    # existence: the kernel releases it when its holder dies, so a killed run never leaves a
    # lock behind that makes the next run wait forever.
    with open(cache / f"{name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process to finish {key.get('label', name)}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        hit = load()  # trained by the process that held the lock
        if hit is not None:
            return hit
        model, record = build()
        meta = {"arch": key["arch"], "arch_args": key["arch_args"], "key": key, "record": record}
        io.save_checkpoint(path, model, meta, overwrite=True)
    return model, {**record, "cached": False}


def training_key(
    arch: str,
    arch_args: dict[str, Any],
    train_config: dict[str, Any],
    seed: int,
    excluded: Any,
    data_label: str,
    device_type: str,
) -> dict[str, Any]:
    """The whole configuration a trained model is cached under (its hash names the files)."""
    return {
        "label": f"{arch} seed {seed} excluding {excluded}",
        "arch": arch,
        "arch_args": arch_args,
        "train": train_config,
        "seed": seed,
        "excluded": excluded,
        "data": data_label,
        "code": TRAINING_CODE_VERSION,
        "device": device_type,
    }


def trained_model(
    cache: Path,
    data: ImageData,
    *,
    arch: str,
    arch_args: dict[str, Any],
    train_config: dict[str, Any],
    seed: int,
    data_label: str,
    device: torch.device,
    without: ForgetSpec | None = None,
    say: Log = log,
) -> tuple[nn.Module, dict[str, Any]]:
    """The original model (``without=None``) or the reference retrained without ``without``'s
    forget set: the one way every benchmark trains them, cached by configuration.

    The original is ``create_model`` seeded with ``seed``, trained on ``data.train``; the
    reference is famr's ``retrain`` method from it (every layer re-initialised, trained on the
    retain set with the same schedule and seed).

    Returns:
        The model and its record (``seconds``, ``history``, ``test_acc_all_classes``).
    """
    excluded: Any = []
    if isinstance(without, ClassForget):
        excluded = list(without.classes)  # the key format class-wise caches were made with
    elif without is not None:
        excluded = without.to_dict()
    key = training_key(arch, arch_args, train_config, seed, excluded, data_label, device.type)

    def build():
        if without is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                initial = create_model(arch, **arch_args)
            say(f"training the original ({data_label}), seed {seed}")
            result = train(initial, data.train, device=device, **{**train_config, "seed": seed})
        else:
            # the original is needed only for its architecture and init scheme: a cache hit on
            # the reference never loads it
            original, _ = trained_model(
                cache,
                data,
                arch=arch,
                arch_args=arch_args,
                train_config=train_config,
                seed=seed,
                data_label=data_label,
                device=device,
                say=say,
            )
            splits = without.split(data.train, data.test, data.num_classes)
            say(f"retraining without {excluded} ({data_label}), seed {seed}")
            result = unlearn(
                original, splits, method="retrain", device=device, **{**train_config, "seed": seed}
            )
        return result.model, {"seconds": result.seconds, "history": result.history}

    model, record = cached_training(cache, key, build, say)
    record["test_acc_all_classes"] = evaluate(
        model, test_retain=data.test, metrics=["test_retain_acc"], device=device
    )["test_retain_acc"]
    say(
        f"{key['label']}: test accuracy {record['test_acc_all_classes']:.2f} % (all classes), "
        f"trained in {record['seconds']:.0f} s"
    )
    return model, record


def as_result(model: nn.Module, record: dict[str, Any], method: str) -> Result:
    """A trained (possibly cached) model as a :class:`famr.Result` with its training time."""
    return Result(model.eval(), method, TrainConfig(), record.get("history", []), record["seconds"])


# --- selection rules: what a table reports, decided on held-out data only -------------------

QUANTILE_RULE = (
    "the famr_quantile run with the smallest estimated gap: the mean of |forget accuracy - "
    "the original model's held-out accuracy| (what a retrained model scores on data it never "
    "saw) and |retain accuracy - the original's|; the retrained model and the test set are "
    "not looked at"
)


def choose_quantile(runs: dict, holdout_acc: float, candidates: list[str]) -> dict:
    """The famr_quantile configuration picked by :data:`QUANTILE_RULE` among ``candidates``.

    Args:
        runs: The comparison's runs (``original`` and the candidates' metrics and history).
        holdout_acc: The original model's accuracy (%) on the held-out split.
        candidates: The run names to choose from.
    """
    retain_before = runs["original"]["retain_acc"]
    estimates = {}
    for name in candidates:
        run = runs.get(name, {})
        if "forget_acc" not in run:  # diverged
            continue
        forget_off = abs(run["forget_acc"] - holdout_acc)
        estimates[name] = (forget_off + abs(run["retain_acc"] - retain_before)) / 2
    chosen = min(estimates, key=estimates.get) if estimates else None
    reached = [
        name
        for name in estimates
        if (runs[name].get("history") or [{}])[-1].get("stopped_at") is not None
    ]
    return {
        "run": chosen,
        "rule": QUANTILE_RULE,
        "holdout_acc": holdout_acc,
        "estimated_gap": estimates,
        "reached_level": reached,
    }


# --- results ------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Machine and library facts for a results file."""
    import platform

    info = io.environment()
    info["cpu"] = platform.processor() or platform.machine()
    info["ld_preload"] = os.environ.get("LD_PRELOAD", "")
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["famr"] = __version__
    return info


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": var**0.5, "n": n}


def update_benchmarks_md(section: str, text: str, path: Path | None = None) -> None:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->`` in
    BENCHMARKS.md (appending the section when absent), so tables are written by the scripts.

    Raises:
        ValueError: No ``path`` is given and famr does not run from a source checkout (an
            installed famr has no BENCHMARKS.md of its own to write to).
    """
    if path is None:
        root = Path(__file__).resolve().parents[2]
        if not (root / "pyproject.toml").exists() or not (root / "benchmarks").is_dir():
            raise ValueError(
                "famr does not run from a source checkout: pass the BENCHMARKS.md to update"
            )
        path = root / "BENCHMARKS.md"
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in current and end in current:
        before, rest = current.split(start, 1)
        _, after = rest.split(end, 1)
        new = before + block + after
    else:
        new = current.rstrip() + "\n\n" + block + "\n"
    io.write_text_atomic(path, new)


# --- the CIFAR-10 class-wise protocol (SalUn / Unlearn-Sparse): 45k / 5k / 10k ---------------

TRAIN_CPU = {
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "augment": "crop_flip",
    "bf16": True,
    "channels_last": True,
    "batchnorm": "train",
}
CIFAR10_PROFILES = {
    "cpu": {"arch": "resnet20", "train": TRAIN_CPU},
    "gpu": {
        "arch": "resnet18_cifar",
        "train": {**TRAIN_CPU, "epochs": 15, "batch_size": 256, "lr": 0.1},
    },
}
CIFAR10_DATA_LABEL = "cifar10 45k/5k/10k, validation seed 0"
SPEED = {"bf16": True, "channels_last": True}  # measured 2.6x faster conv training on this CPU


def cifar10_protocol(root: str | Path, profile: str = "cpu", quick: bool = False):
    """``(arch, arch_args, train_config, data)``: CIFAR-10 with 10 % of each training class
    held out as the validation split (seed 0), and the profile's model and schedule (``quick``:
    2-epoch trainings, a smoke run)."""
    from .data import hold_out_validation, load_dataset

    chosen = CIFAR10_PROFILES[profile]
    train_config = dict(chosen["train"])
    if quick:
        train_config["epochs"] = 2
    data = hold_out_validation(load_dataset("cifar10", root), fraction=0.1, seed=0)
    arch_args = {
        "num_classes": 10,
        "in_channels": 3,
        "mean": list(data.mean),
        "std": list(data.std),
    }
    return chosen["arch"], arch_args, train_config, data


def cifar10_original(
    cache: Path, root: str | Path, device: torch.device
) -> tuple[nn.Module, ImageData]:
    """The class-wise benchmark's CIFAR-10 original (cpu profile, seed 0), read from the model
    ``cache`` (trained there when absent, ~20 min on a CPU), and the protocol's data."""
    arch, arch_args, train_config, data = cifar10_protocol(root)
    model, _ = trained_model(
        cache,
        data,
        arch=arch,
        arch_args=arch_args,
        train_config={k: v for k, v in train_config.items() if k != "seed"},
        seed=0,
        data_label=CIFAR10_DATA_LABEL,
        device=device,
    )
    return model, data


def with_speed(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """Speed flags: bf16 + channels_last for whole-network runs; bf16 feature extraction for
    head-only FAMR runs (their body runs once, under autocast)."""
    from .methods import METHODS

    cfg = METHODS.get(method).meta["config"]()
    params = config.get("params", cfg.params)
    if params is None:  # famr's "auto" fields: its recipe's value (a benchmark gives retain data)
        from .methods.famr_auto import RECIPES

        recipe = config.get("recipe", cfg.recipe)  # a preset's own recipe, else "auto"
        params = RECIPES["last_stage" if recipe == "auto" else recipe]().params
    if params == "head":
        return {**config, "bf16": True} if hasattr(cfg, "cache_features") else config
    return {**SPEED, **config}  # a value the run sets itself wins


def run_famr(argv: list[str], cwd: Path | None = None) -> tuple[float, str]:
    """Run the command line ``famr ARGV`` in a new process, as a user would; returns its wall
    time and standard output. A failure stops the benchmark with the command's error."""
    import subprocess
    import sys
    import time

    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "famr", *argv], capture_output=True, text=True, cwd=cwd
    )
    if done.returncode != 0:
        raise SystemExit(f"famr {' '.join(argv)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


# --- command-line pieces the benchmark scripts share -------------------------------------------


def add_run_argument(parser, example: str) -> None:
    """``--run LABEL JSON`` (repeatable): one more labelled run, a config naming its method."""
    parser.add_argument(
        "--run",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL", "JSON"),
        help=f"one more labelled run, e.g. {example} (repeatable)",
    )


def parse_runs(pairs, taken) -> dict[str, dict[str, Any]]:
    """``--run`` pairs as ``{label: config}``, each checked before any work: JSON, an object
    naming its method, a label not in ``taken``, a valid config for that method. Raises
    ``SystemExit`` with one line naming the bad value."""
    from .config import make_config
    from .methods import METHODS

    runs: dict[str, dict[str, Any]] = {}
    for label, text in pairs:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--run {label} {text!r}: not JSON ({err.msg})") from None
        if not isinstance(config, dict) or "method" not in config:
            raise SystemExit(
                f"--run {label} {text!r}: give a JSON object naming its method, e.g. "
                '\'{"method": "famr", "recipe": "head"}\''
            )
        if label in taken or label in runs:
            raise SystemExit(f"--run {label}: the label is taken; taken: {', '.join(taken)}")
        values = {k: v for k, v in config.items() if k != "method"}
        try:
            make_config(METHODS.get(config["method"]).meta["config"], values)
        except (KeyError, ValueError, TypeError) as err:
            raise SystemExit(f"--run {label}: {' '.join(str(err).split())}") from None
        runs[label] = config
    return runs


def add_relearn_argument(parser) -> None:
    """``--relearn-lr RATE [RATE ...]``: the relearning attack's learning rate(s)."""
    parser.add_argument(
        "--relearn-lr",
        type=float,
        nargs="+",
        default=[0.01],
        help="the relearning attack's learning rate(s); with several it runs once per rate and "
        "reports the strongest (famr.attacks.relearn)",
    )


def relearn_lr(rates):
    """``--relearn-lr``'s values as ``RelearnConfig.lr`` takes them: one rate, or a tuple."""
    return rates[0] if len(rates) == 1 else tuple(rates)
