"""Interrupted runs: Ctrl-C and kill leave the output folder as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import files_in, train_digits

from famr import io


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_digits(tmp_path_factory.mktemp("checkpoint"))


# --- interrupted runs -----------------------------------------------------------------------


def test_progress_bars_start_no_monitor_thread():
    # tqdm's monitor thread is joined at exit; after a Ctrl-C that left tqdm's write lock held
    # that join never returns (the interrupted run then hangs instead of exiting with 130)
    code = (
        "import threading\n"
        "from famr.cli import _progress_factory\n"
        "update = _progress_factory(True)('train')\n"
        "update(1, 10)\n"
        "print(sorted(t.name for t in threading.enumerate()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "tqdm_monitor" not in out.stdout, out.stdout
    assert "MainThread" in out.stdout


@pytest.mark.parametrize("enabled", [True, False])
def test_a_swallowed_interrupt_is_raised_again_at_the_next_step(enabled, monkeypatch):
    # Python only reports a KeyboardInterrupt raised inside a finaliser; the flag the signal
    # handler sets makes the next step raise it again, progress bar or not
    from famr.cli import common as cli  # the module that owns the interrupt flag

    monkeypatch.setattr(cli, "_INTERRUPT", threading.Event())
    update = cli._progress_factory(enabled)("train")
    update(1, 10)  # no interrupt: the step goes on
    with pytest.raises(KeyboardInterrupt):
        cli._interrupt(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        update(2, 10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_run_leaves_the_output_folder_as_it_was(checkpoint, tmp_path, sig):
    out = tmp_path / "model.safetensors"
    # an earlier output that --overwrite would replace if the run finished
    io.save_checkpoint(out, *io.load_checkpoint(checkpoint))
    (tmp_path / "notes.txt").write_text("keep me")
    before = files_in(tmp_path)
    argv = [sys.executable, "-m", "famr.cli", "forget", "--checkpoint", str(checkpoint)]
    argv += ["--classes", "3", "--out", str(out), "--overwrite", "--epochs", "100000"]
    argv += ["--method", "famr_literal"]  # whole-network steps: a long run
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    seen = bytearray()

    def read():
        while chunk := proc.stderr.read1(4096):
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 120
    while b"step" not in seen and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # wait until the optimisation loop reports progress
    assert b"step" in seen, f"the run never started: {bytes(seen)!r}"
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a 100000-epoch run behind
        proc.wait()
        raise AssertionError(
            f"no exit 60 s after {sig!r}; stderr: {bytes(seen[-2000:])!r}"
        ) from None
    assert code == 130
    reader.join(timeout=10)
    assert b"interrupted" in seen
    assert files_in(tmp_path) == before, "an interrupted run must leave no trace"
