"""The I/O layer, used by the CLI and the benchmarks (the core library never writes files).

Checkpoints are a safetensors file of weights plus a JSON sidecar (``<name>.json``) holding the
architecture and its arguments, the data set, the forget spec, the config and metrics. Loading
never unpickles anything. Every write goes to a temporary name in the destination folder and
is renamed into place, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .models import create_model

FORMAT_VERSION = 1


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of checkpoint ``path`` (``model.safetensors`` -> ``model.json``)."""
    return Path(path).with_suffix(".json")


def check_new_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Raise ``FileExistsError`` if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(path)!r} already exists; pass --overwrite to replace it"
        )
    return path


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """Pretty, standard JSON (no NaN literals)."""
    return json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (they are delivered right after).

    Used around the final renames, so an interrupt can never land between two of them: a
    run's outputs appear all together or not at all.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StagedOutputs:
    """Files written under temporary names, renamed into place together by :meth:`commit`.

    Use as a context manager: leaving the block without ``commit`` (an error, an interrupt)
    deletes every temporary file and leaves the destinations exactly as they were.
    """

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}
        self.committed = False

    def __enter__(self) -> StagedOutputs:
        return self

    def path_for(self, destination: str | Path) -> Path:
        """A fresh temporary file beside ``destination`` to write its content to."""
        destination = Path(destination)
        if destination in self._staged:
            raise ValueError(f"output {str(destination)!r} is staged twice")
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
        )
        os.close(fd)
        # mkstemp creates the file private (0600); give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        self._staged[destination] = Path(tmp)
        return Path(tmp)

    def write_text(self, destination: str | Path, text: str) -> None:
        """Stage ``text`` as the content of ``destination``."""
        self.path_for(destination).write_text(text)

    def commit(self) -> None:
        """Rename every staged file into place, with SIGINT / SIGTERM held back meanwhile.

        Under torchrun only rank 0 commits; the other ranks' staged files are discarded.
        """
        if not distributed.is_main():
            self.__exit__()
            return
        with signals_deferred():
            for destination, tmp in self._staged.items():
                os.replace(tmp, destination)
            self.committed = True
        self._staged.clear()

    def __exit__(self, *exc_info: Any) -> None:
        for tmp in self._staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._staged.clear()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    with StagedOutputs() as stage:
        stage.write_text(path, text)
        stage.commit()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    *,
    stage: StagedOutputs | None = None,
) -> dict[str, str]:
    """Save ``model``'s weights to ``path`` (safetensors) and ``meta`` to its JSON sidecar.

    The sidecar records the weights file's sha256, which :func:`load_checkpoint` checks.

    Args:
        path: Destination ``.safetensors`` file.
        model: The model (its ``state_dict`` is saved, including buffers).
        meta: Must hold ``arch`` and ``arch_args`` (with ``num_classes``, ``in_channels``).
        stage: Stage both files there (committed with the caller's other outputs) instead of
            committing them now.

    Returns:
        ``{"sha256": ..., "metadata_sha256": ...}`` of the weights and sidecar files.
    """
    from safetensors.torch import save_file

    path = Path(path)
    for key in ("arch", "arch_args"):
        if key not in meta:
            raise ValueError(f"checkpoint metadata needs {key!r}")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with contextlib.ExitStack() as stack:
        own = stage is None
        staged = stack.enter_context(StagedOutputs()) if own else stage
        tmp_weights = staged.path_for(path)
        save_file(tensors, str(tmp_weights))
        digest = sha256_file(tmp_weights)
        side = json_text({"format_version": FORMAT_VERSION, **meta, "weights_sha256": digest})
        staged.write_text(sidecar_path(path), side)
        if own:
            staged.commit()
    return {"sha256": digest, "metadata_sha256": hashlib.sha256(side.encode()).hexdigest()}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's JSON sidecar."""
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(
            f"checkpoint metadata {str(side)!r} not found (needed beside {str(path)!r})"
        )
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint metadata {str(side)!r} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or "arch" not in meta or "arch_args" not in meta:
        raise ValueError(f"checkpoint metadata {str(side)!r} lacks 'arch' / 'arch_args'")
    return meta


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path`` and return it with its metadata.

    Raises:
        FileNotFoundError: The weights or the sidecar are missing.
        ValueError: The file is not a valid safetensors file, or its tensors do not match the
            architecture named in the sidecar.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    meta = read_metadata(path)
    args = dict(meta["arch_args"])
    model = create_model(meta["arch"], **args)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"checkpoint {str(path)!r} is not a readable safetensors file: {err}"
        ) from None
    expected = meta.get("weights_sha256")
    actual = sha256_file(path) if expected is not None else None
    if actual != expected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match its metadata: sha256 {actual} "
            f"!= recorded {expected} (a corrupted or replaced weights file)"
        )
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise ValueError(
            f"checkpoint {str(path)!r} holds non-finite (NaN/inf) values in {len(bad)} tensor(s), "
            f"first {bad[0]!r}; refusing to use it"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise ValueError(
            f"checkpoint {str(path)!r} does not match architecture {meta['arch']!r} {args}: {detail}"
        ) from None
    return model.eval(), meta


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Fill a fresh temporary folder, then move it to ``path`` only if the block succeeds.

    An existing ``path`` is replaced only with ``overwrite`` (and only after the new content is
    complete); on any error the destination is left exactly as it was.
    """
    path = Path(path)
    check_new_path(path, overwrite=overwrite)
    if path.exists() and not path.is_dir():
        raise FileExistsError(
            f"output {str(path)!r} is a file; an output folder never replaces a file"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if not distributed.is_main():  # under torchrun only rank 0 writes
            return
        old = None
        with signals_deferred():  # the swap below is never cut in half by an interrupt
            if path.exists():
                old = Path(
                    tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
                )
                os.replace(path, old / "previous")
            os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def environment() -> dict[str, Any]:
    """Versions and machine facts stored with every run."""
    import platform

    import numpy
    import sklearn

    return {
        "famr": __import__("famr").__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # which kernels ran: results differ in the last bits between CPU kinds, and bf16
        # autocast is fast only where the CPU has native bf16 instructions
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
    }


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX): only then is
    ``bf16=True`` faster than float32 on the CPU (elsewhere it is emulated, and slower)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    hardware = any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    # kernels capped below AVX-512 (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA) emulate bf16 too
    return hardware and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
