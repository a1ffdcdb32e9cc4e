"""Shared benchmark helpers: tcmalloc re-exec, a content-addressed model cache, timing records."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import famr
from famr import io

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def reexec_with_tcmalloc() -> None:
    """Re-run this process with tcmalloc preloaded when it is installed (1.2-2x faster on CPU).

    glibc malloc keeps mapping and unmapping activation buffers; tcmalloc caches them. Set
    FAMR_NO_TCMALLOC=1 to opt out.
    """
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
    cache: Path,
    key: dict[str, Any],
    build,
    log=print,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load the model trained under ``key`` from ``cache``, or train it with ``build()`` and save it.

    Args:
        cache: Cache folder.
        key: The full configuration of the training (architecture, data, schedule, seed,
            excluded classes, famr version); its hash names the files.
        build: ``build() -> (model, record)`` trains the model; ``record`` (seconds, history) is
            stored beside it.

    Returns:
        The model and its record (with ``cached: True`` when it was loaded).
    """
    name = config_hash(key)
    path = cache / f"{name}.safetensors"
    lock = cache / f"{name}.lock"
    # Another process training the same model holds the lock: wait for its result.
    while lock.exists() and not path.exists():
        log(f"waiting for another process to finish {key.get('label', name)}")
        time.sleep(30)
    if path.exists() and io.sidecar_path(path).exists():
        model, meta = io.load_checkpoint(path)
        log(f"cache hit {path.name}: {key.get('label', '')}")
        return model, {**meta["record"], "cached": True}
    cache.mkdir(parents=True, exist_ok=True)
    lock.touch()
    try:
        model, record = build()
        meta = {"arch": key["arch"], "arch_args": key["arch_args"], "key": key, "record": record}
        io.save_checkpoint(path, model, meta)
    finally:
        lock.unlink(missing_ok=True)
    return model, {**record, "cached": False}


def environment() -> dict[str, Any]:
    """Machine and library facts for the results file."""
    import platform

    info = io.environment()
    info["cpu"] = platform.processor() or platform.machine()
    info["ld_preload"] = os.environ.get("LD_PRELOAD", "")
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["famr"] = famr.__version__
    return info


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def update_benchmarks_md(section: str, text: str, path: Path | None = None) -> None:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->`` in
    BENCHMARKS.md (appending the section when absent), so tables are written by the scripts."""
    path = path or Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
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


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": var**0.5, "n": n}
