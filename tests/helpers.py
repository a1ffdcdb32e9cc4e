"""Helpers the command-line tests share (imported by test modules, not a test module)."""

from __future__ import annotations

import contextlib
import io as stdio
from pathlib import Path

from famr import io
from famr.cli import main


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (symlinks by their target's bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``famr argv`` in this process: exit code, stdout, stderr."""
    out, err = stdio.StringIO(), stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A copy of a checkpoint and its metadata."""
    dst.write_bytes(src.read_bytes())
    io.sidecar_path(dst).write_bytes(io.sidecar_path(src).read_bytes())
    return dst


def train_digits(folder: Path, epochs: int = 4) -> Path:
    """A digits model trained through the CLI (seconds)."""
    path = folder / "digits.safetensors"
    argv = ["train", "--data", "digits", "--epochs", str(epochs), "--out", str(path), "--quiet"]
    assert main(argv) == 0
    return path
