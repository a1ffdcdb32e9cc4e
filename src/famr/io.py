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
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from ._version import __version__
from .models import create_model

FORMAT_VERSION = 1


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of checkpoint ``path`` (``model.safetensors`` -> ``model.json``)."""
    return Path(path).with_suffix(".json")


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
    run's outputs appear all together or not at all. Masking the signal is not enough once
    torch has started threads (the kernel then delivers it to another thread, and Python still
    runs the handler in the main thread, inside the block): while the block runs, the handlers
    only note the signal, and the noted ones are handed to the previous handlers at the end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, signal.SIGTERM)
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in pending[:1]:  # one interrupt is enough to act on
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL and signum == signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """Where ``path`` really points: its resolved path, and the file it names (device and inode)
    when it exists, so a hard link or a symlink to an input is recognised as that input."""
    try:
        stat = os.stat(path)
        inode = (stat.st_dev, stat.st_ino)
    except OSError:
        inode = None
    return os.path.realpath(path), inode


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (after symlinks; hard links by their inode)."""
    (real_a, inode_a), (real_b, inode_b) = _identity(Path(a)), _identity(Path(b))
    return real_a == real_b or (inode_a is not None and inode_a == inode_b)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _existing_ancestor(folder: Path) -> Path:
    folder = folder.absolute()
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_writable(folder: Path, destination: Path) -> None:
    """Raise now, before any work, if nothing could be written into ``folder``: the nearest
    existing folder on its path gets a probe file, created and removed at once (a permission
    test alone misses read-only file systems and is always true for root)."""
    base = _existing_ancestor(folder)
    if not base.is_dir():
        what = "a symlink to nothing" if base.is_symlink() and not base.exists() else "a file"
        raise NotADirectoryError(
            f"output {str(destination)!r} cannot be written: {str(base)!r} is {what}, not a folder"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".famr-probe.", dir=base)
    except OSError as err:
        raise PermissionError(
            f"output {str(destination)!r} cannot be written: folder {str(base)!r} is not "
            f"writable ({err.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def _folders_locked(folders: list[Path]) -> Iterator[None]:
    """An exclusive ``flock`` on each destination folder while one run commits, so two famr
    runs writing the same outputs with ``overwrite`` commit one after the other, never
    interleaved (a lock on the folder itself: no lock file is left behind)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: exclusive creation still guards the no-overwrite case
        yield
        return
    fds = []
    # one lock per folder however it is spelled (a path with "..", a symlink, relative or
    # absolute: flock locks belong to an open file, so a folder opened twice would wait on
    # itself), taken in one order everywhere (no deadlock between two runs)
    unique = {}
    for folder in folders:
        stat = os.stat(folder)
        unique[(stat.st_dev, stat.st_ino)] = folder
    try:
        for key in sorted(unique):
            fd = os.open(unique[key], os.O_RDONLY)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock


def _sync_folders(folders: list[Path]) -> None:
    """fsync each folder, so the new names survive a power cut (POSIX; a no-op elsewhere)."""
    for folder in {os.path.realpath(f) for f in folders}:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:  # some file systems do not sync folders
            pass
        finally:
            os.close(fd)


# Files committed by this process, so that an interrupt arriving just after a commit (held back
# during it, delivered as the signals are unmasked) is not reported as "nothing written".
_COMMITTED: list[Path] = []


def committed_outputs() -> list[Path]:
    """The files :class:`Outputs` placed in this process since :func:`forget_committed`."""
    return list(_COMMITTED)


def forget_committed() -> None:
    """Start a fresh list for :func:`committed_outputs` (the CLI does, per command)."""
    _COMMITTED.clear()


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; anything that is not readable JSON is one ``ValueError`` naming it
    (including nesting deep enough to exhaust Python's recursion limit)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {detail}") from None


class Outputs:
    """Every file one command writes: planned and checked before any work starts, staged
    under temporary names, and committed together at the end.

    The promises (``README``, "What famr promises about your files"):

    - no input is ever an output: each destination is compared with every input path after
      resolving symlinks, and by inode for hard links;
    - an existing file is replaced only with ``overwrite``, and only the files named here (an
      output folder is never emptied or swapped); without ``overwrite`` a file that another
      process created while this one ran is not replaced either (each file is created
      exclusively, by a hard link, at commit time);
    - all files appear together or none does: an error, an interrupt or a lost race during the
      commit rolls back the files already placed (replaced files are restored);
    - folders this run created are removed again when nothing was committed;
    - a destination that is a folder, or that lies where nothing can be written, is an error
      before the run, not after it;
    - files get the permissions ``open()`` would give them (``0o666`` minus the umask).

    Use as a context manager; leaving the block without :meth:`commit` discards everything.
    """

    def __init__(
        self,
        files: list[str | Path],
        *,
        inputs: list[str | Path | None] = (),
        overwrite: bool = False,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.overwrite = overwrite
        self._staged: dict[Path, Path] = {}
        self._made_folders: list[Path] = []
        self.committed = False
        named = [Path(p) for p in inputs if p]
        for i, out in enumerate(self.files):
            for other in self.files[:i]:
                if same_file(out, other):
                    raise ValueError(f"output {str(out)!r} is named twice ({str(other)!r})")
            for source in named:
                if same_file(out, source):
                    raise ValueError(
                        f"output {str(out)!r} is the input {str(source)!r}; famr never writes "
                        "over a file it reads (an input is never overwritten)"
                    )
            if out.is_dir():
                raise IsADirectoryError(
                    f"output {str(out)!r} is an existing folder; give a file path"
                )
            if os.path.lexists(out) and not (out.is_symlink() or out.is_file()):
                # a device, a FIFO or a socket: replacing it would break the system (as root,
                # "--audit /dev/null --overwrite" would replace /dev/null)
                raise ValueError(
                    f"output {str(out)!r} exists and is not a regular file; famr never replaces it"
                )
            if os.path.lexists(out) and not overwrite:
                raise FileExistsError(
                    f"output {str(out)!r} already exists; pass --overwrite to replace it"
                )
            _check_writable(out.parent, out)

    def __enter__(self) -> Outputs:
        return self

    def path_for(self, destination: str | Path) -> Path:
        """A fresh temporary file beside ``destination`` (one of the planned files)."""
        destination = Path(destination)
        if destination not in self.files:
            raise ValueError(f"output {str(destination)!r} was not planned")
        if destination in self._staged:
            raise ValueError(f"output {str(destination)!r} is staged twice")
        missing = []
        folder = destination.parent.absolute()
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        destination.parent.mkdir(parents=True, exist_ok=True)
        self._made_folders.extend(reversed(missing))
        fd, tmp = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
        )
        os.close(fd)
        self._staged[destination] = Path(tmp)
        return Path(tmp)

    def write_text(self, destination: str | Path, text: str) -> None:
        """Stage ``text`` as the content of ``destination``."""
        self.path_for(destination).write_text(text)

    def commit(self) -> None:
        """Place every staged file, all together, with SIGINT / SIGTERM held back meanwhile.

        Under torchrun only rank 0 commits; the other ranks' staged files are discarded.

        Raises:
            FileExistsError: A destination appeared after the run started and ``overwrite``
                is off (another run wrote it); nothing of this run is kept.
        """
        unstaged = [str(f) for f in self.files if f not in self._staged]
        if unstaged:
            raise ValueError(f"outputs {unstaged} were planned but never written")
        if not distributed.is_main():
            self.__exit__()
            return
        mode = 0o666 & ~_umask()
        for tmp in self._staged.values():  # the content on disk before any name points to it
            os.chmod(tmp, mode)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        # the lock first (an interrupt while waiting for another run must still work), then
        # the signals held back for the placing itself
        with _folders_locked([d.parent for d in self._staged]), signals_deferred():
            placed: list[tuple[Path, Path | None]] = []
            try:
                for destination, tmp in self._staged.items():
                    placed.append((destination, self._place(destination, tmp)))
                _sync_folders([d.parent for d in self._staged])
            except BaseException:
                for destination, backup in reversed(placed):
                    if backup is not None:
                        os.replace(backup, destination)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(destination)
                raise
            for _, backup in placed:
                if backup is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(backup)
            self.committed = True
            _COMMITTED.extend(self.files)
        self._staged.clear()

    def _place(self, destination: Path, tmp: Path) -> Path | None:
        """Move ``tmp`` to ``destination``; returns the backup of a replaced file, if any."""
        if self.overwrite and os.path.lexists(destination):
            if not (destination.is_symlink() or destination.is_file()):
                # a folder or a special file appeared after the plan: never moved or replaced
                raise FileExistsError(
                    f"output {str(destination)!r} became a folder or a special file while this "
                    "run worked; nothing written"
                )
            backup = tmp.with_suffix(".old")  # beside our own unique temporary file
            try:
                os.link(destination, backup, follow_symlinks=False)
            except OSError:  # no hard links here: move it aside instead
                os.replace(destination, backup)
            try:
                os.replace(tmp, destination)
            except BaseException:
                os.replace(backup, destination)  # the original back where it was
                raise
            return backup
        try:
            os.link(tmp, destination)  # fails if the destination exists: exclusive creation
        except FileExistsError:
            raise FileExistsError(
                f"output {str(destination)!r} was created by someone else while this run "
                "worked; nothing written (pass --overwrite to replace it)"
            ) from None
        except OSError:  # a file system without hard links: reserve the name, then replace it
            try:
                os.close(os.open(destination, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                raise FileExistsError(
                    f"output {str(destination)!r} was created by someone else while this run "
                    "worked; nothing written (pass --overwrite to replace it)"
                ) from None
            try:
                os.replace(tmp, destination)
            except BaseException:
                os.unlink(destination)  # the empty placeholder is ours
                raise
            return None
        os.unlink(tmp)
        return None

    def __exit__(self, *exc_info: Any) -> None:
        for tmp in self._staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._staged.clear()
        if not self.committed:
            for folder in reversed(self._made_folders):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty
        self._made_folders.clear()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` (replacing it) through a temporary file and one rename."""
    with Outputs([path], overwrite=True) as outputs:
        outputs.write_text(path, text)
        outputs.commit()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    *,
    stage: Outputs | None = None,
    overwrite: bool = False,
) -> dict[str, str]:
    """Save ``model``'s weights to ``path`` (safetensors) and ``meta`` to its JSON sidecar.

    The sidecar records the weights file's sha256, which :func:`load_checkpoint` checks.

    Args:
        path: Destination ``.safetensors`` file.
        model: The model (its ``state_dict`` is saved, including buffers).
        meta: Must hold ``arch`` and ``arch_args`` (with ``num_classes``, ``in_channels``).
        stage: Stage both files there (committed with the caller's other outputs, which must
            have planned ``path`` and its sidecar) instead of committing them now.
        overwrite: Without ``stage``: replace existing files.

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
        staged = (
            stack.enter_context(Outputs([path, sidecar_path(path)], overwrite=overwrite))
            if own
            else stage
        )
        tmp_weights = staged.path_for(path)
        save_file(tensors, str(tmp_weights))
        digest = sha256_file(tmp_weights)
        side = json_text({"format_version": FORMAT_VERSION, **meta, "weights_sha256": digest})
        staged.write_text(sidecar_path(path), side)
        if own:
            staged.commit()
    return {"sha256": digest, "metadata_sha256": hashlib.sha256(side.encode()).hexdigest()}


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**31 for v in value
    )


def _bound(value: Any) -> bool:
    """A certified distance bound: a finite number >= 0, or None (no certificate)."""
    return value is None or (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _chain(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict)
        and set(value) == {"origin_sha256", "steps", "bound"}
        and _is_sha256(value["origin_sha256"])
        and _bound(value["bound"])
        and isinstance(value["steps"], list)
        and all(
            isinstance(step, dict)
            and set(step) == {"input_sha256", "anchor_sha256", "bound"}
            and _is_sha256(step["input_sha256"])
            and _is_sha256(step["anchor_sha256"])
            and _bound(step["bound"])
            for step in value["steps"]
        )
    )


def _is_sha256(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


# Sidecar fields famr reads back, with what each must be. A field that is present but does not
# fit is an error naming it; a missing weights hash is an error too (it is what ties the
# sidecar to its weights: without it any weights file would load).
_METADATA_FIELDS: dict[str, tuple[Any, str]] = {
    "arch": (lambda v: isinstance(v, str) and bool(v), "an architecture name"),
    "arch_args": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
        "a JSON object of architecture arguments",
    ),
    "weights_sha256": (_is_sha256, "the 64-hex-digit sha256 of the weights file"),
    "forgotten_classes": (_int_list, "a list of class ids"),
    "excluded_classes": (_int_list, "a list of class ids"),
    "forget": (lambda v: v is None or isinstance(v, dict), "a forget spec object"),
    "config": (lambda v: v is None or isinstance(v, dict), "a config object"),
    "method": (lambda v: isinstance(v, str), "a method name"),
    "validation": (
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and isinstance(v.get("fraction"), float)
                and 0 < v["fraction"] < 1
                and _int_list([v.get("seed")])
                and v["seed"] >= 0
            )
        ),
        "null or the held-out split {fraction in (0, 1), seed >= 0}",
    ),
    "deviation_chain": (
        _chain,
        "a deviation chain {origin_sha256, steps: [{input_sha256, anchor_sha256, bound}], "
        "bound} with finite bounds >= 0 or null",
    ),
}


def _spec_dict(value: Any) -> bool:
    """A recorded forget spec (``spec.to_dict()``) of a known kind with fields of its kind."""
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    kind = value.get("kind", "classes")
    number = (int, float)
    checks = {
        "classes": lambda v: _int_list(v.get("classes")),
        "samples": lambda v: _int_list(v.get("indices")),
        "random": lambda v: (
            isinstance(v.get("fraction"), number)
            and not isinstance(v.get("fraction"), bool)
            and _int_list([v.get("seed", 0)])
        ),
        "concept": lambda v: _int_list([v.get("concept")]) and isinstance(v.get("name", ""), str),
        "style": lambda v: True,
    }
    return kind in checks and checks[kind](value)


_METADATA_FIELDS.update(
    {
        "forget": (_spec_dict, "a forget spec of a known kind (classes, samples, random, ...)"),
        "source_sha256": (_is_sha256, "the 64-hex-digit sha256 of the input checkpoint"),
        "anchor": (
            lambda v: (
                v is None
                or (
                    isinstance(v, dict)
                    and isinstance(v.get("checkpoint"), str)
                    and _is_sha256(v.get("sha256"))
                )
            ),
            "null or the anchor checkpoint {checkpoint, sha256}",
        ),
    }
)
_REQUIRED_METADATA = ("arch", "arch_args", "weights_sha256")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint's JSON sidecar (see :func:`_read_metadata`)."""
    return _read_metadata(path)[0]


def _read_metadata(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read and check a checkpoint's JSON sidecar; also the sha256 of the very bytes parsed.

    Raises:
        FileNotFoundError: The sidecar is missing.
        ValueError: It is not JSON, lacks ``arch`` / ``arch_args`` / ``weights_sha256``, or a
            field famr reads holds the wrong kind of value (the message names the field).
    """
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(
            f"checkpoint metadata {str(side)!r} not found (needed beside {str(path)!r})"
        )
    raw = side.read_bytes()
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ValueError(f"checkpoint metadata {str(side)!r} is not valid JSON: {detail}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint metadata {str(side)!r} is not a JSON object")
    missing = [k for k in _REQUIRED_METADATA if k not in meta or meta[k] is None]
    if missing:
        raise ValueError(
            f"checkpoint metadata {str(side)!r} lacks {', '.join(map(repr, missing))}"
            + (
                " (the weights hash ties the metadata to its weights; a sidecar without it is "
                "refused)"
                if "weights_sha256" in missing
                else ""
            )
        )
    for key, (ok, expected) in _METADATA_FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise ValueError(
                f"checkpoint metadata {str(side)!r}: {key}={meta[key]!r} is not valid; it must "
                f"be {expected}"
            )
    k = meta["arch_args"].get("num_classes")
    for key in ("forgotten_classes", "excluded_classes"):
        stray = [c for c in meta.get(key) or [] if isinstance(k, int) and not 0 <= c < k]
        if stray:
            raise ValueError(
                f"checkpoint metadata {str(side)!r}: {key} holds {stray}, outside the model's "
                f"classes 0..{k - 1}"
            )
    return meta, hashlib.sha256(raw).hexdigest()


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path`` and return it with its metadata.

    Raises:
        FileNotFoundError: The weights or the sidecar are missing.
        ValueError: The file is not a valid safetensors file, or its tensors do not match the
            architecture named in the sidecar.
    """
    model, meta, _ = load_checkpoint_hashed(path)
    return model, meta


def load_checkpoint_hashed(path: str | Path) -> tuple[nn.Module, dict[str, Any], dict[str, str]]:
    """:func:`load_checkpoint`, also returning ``{"sha256", "metadata_sha256"}`` of the very
    bytes the model and metadata were built from (each file is read once: a file replaced
    between hashing and loading cannot slip into an audit record)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    meta, metadata_sha256 = _read_metadata(path)
    args = dict(meta["arch_args"])
    try:
        model = create_model(meta["arch"], **args)
    except (TypeError, KeyError, ValueError) as err:  # e.g. an edited sidecar
        raise ValueError(
            f"checkpoint metadata {str(sidecar_path(path))!r} does not describe a model: {err}"
        ) from None
    raw = path.read_bytes()
    try:
        tensors = load(raw)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"checkpoint {str(path)!r} is not a readable safetensors file: {err}"
        ) from None
    expected = meta["weights_sha256"]
    actual = hashlib.sha256(raw).hexdigest()
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
    return model.eval(), meta, {"sha256": actual, "metadata_sha256": metadata_sha256}


def environment() -> dict[str, Any]:
    """Versions and machine facts stored with every run."""
    import platform

    import numpy
    import sklearn

    return {
        "famr": __version__,
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
