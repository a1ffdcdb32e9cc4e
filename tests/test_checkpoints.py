"""Hostile checkpoints: truncated, tampered, NaN-holding or code-carrying files are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from helpers import copy_checkpoint, run_cli, train_digits

from famr import io


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_digits(tmp_path_factory.mktemp("checkpoint"))


# --- hostile checkpoints -------------------------------------------------------------------


def test_truncated_checkpoint_is_refused(checkpoint, tmp_path):
    bad = copy_checkpoint(checkpoint, tmp_path / "t.safetensors")
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        io.load_checkpoint(bad)


def test_tampered_weights_are_detected_by_their_hash(checkpoint, tmp_path):
    bad = copy_checkpoint(checkpoint, tmp_path / "t.safetensors")
    data = bytearray(bad.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit inside a weight: still a valid safetensors file
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its metadata: sha256"):
        io.load_checkpoint(bad)


def test_nan_weights_are_refused(checkpoint, tmp_path):
    model, meta = io.load_checkpoint(checkpoint)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    path = tmp_path / "nan.safetensors"
    io.save_checkpoint(path, model, meta)
    with pytest.raises(ValueError, match="non-finite"):
        io.load_checkpoint(path)
    code, _, err = run_cli(
        [
            "forget",
            "--checkpoint",
            str(path),
            "--classes",
            "3",
            "--out",
            str(tmp_path / "o.safetensors"),
        ]
    )
    assert code == 2 and "non-finite" in err and not (tmp_path / "o.safetensors").exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/famr_exploit_marker")


def test_pickle_disguised_as_safetensors_is_not_executed(checkpoint, tmp_path):
    MARKER.unlink(missing_ok=True)
    bad = copy_checkpoint(checkpoint, tmp_path / "evil.safetensors")
    bad.write_bytes(pickle.dumps({"conv": _Exploit()}))
    code, _, err = run_cli(
        [
            "forget",
            "--checkpoint",
            str(bad),
            "--classes",
            "3",
            "--out",
            str(tmp_path / "o.safetensors"),
        ]
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not MARKER.exists(), "loading a checkpoint must never run code"
