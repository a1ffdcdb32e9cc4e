"""What famr promises about a user's files (issue 19): no command deletes or replaces a file it
did not create, inputs are never outputs, outputs appear together or not at all, two runs never
silently replace each other's results, and permissions follow the umask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import copy_checkpoint, files_in, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from famr import io
from famr.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    path = folder / "m.safetensors"
    assert main(["train", "--epochs", "3", "--out", str(path), "--quiet"]) == 0
    return path


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- the output layer itself -------------------------------------------------------------


def test_outputs_appear_together_or_not_at_all(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError):
        with io.Outputs([tmp_path / "a.txt", tmp_path / "b.txt"], overwrite=True) as out:
            out.write_text(tmp_path / "a.txt", "new a")
            out.write_text(tmp_path / "b.txt", "new b")
            raise RuntimeError("crash before the commit")
    assert files_in(tmp_path) == {"a.txt": b"old a"}
    with io.Outputs([tmp_path / "a.txt", tmp_path / "b.txt"], overwrite=True) as out:
        out.write_text(tmp_path / "a.txt", "new a")
        out.write_text(tmp_path / "b.txt", "new b")
        out.commit()
    assert files_in(tmp_path) == {"a.txt": b"new a", "b.txt": b"new b"}


def test_a_failed_run_leaves_no_folder_behind(tmp_path):
    target = tmp_path / "new" / "deeper" / "x.json"
    with pytest.raises(RuntimeError), io.Outputs([target]) as out:
        out.write_text(target, "partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_the_named_files(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "old.txt").write_text("a file famr did not write")
    (folder / "new.txt").write_text("an earlier result")
    with pytest.raises(FileExistsError, match="--overwrite"):
        io.Outputs([folder / "new.txt"])
    with io.Outputs([folder / "new.txt"], overwrite=True) as out:
        out.write_text(folder / "new.txt", "new")
        out.commit()
    assert files_in(tmp_path) == {
        "run/old.txt": b"a file famr did not write",
        "run/new.txt": b"new",
    }


def test_a_file_that_appears_during_the_run_is_not_replaced(tmp_path):
    """Two runs writing one output: the exists-check and the placing are one atomic step."""
    a, b = tmp_path / "m.safetensors", tmp_path / "m.json"
    first, second = io.Outputs([a, b]), io.Outputs([a, b])  # both checked before either ran
    with first:
        first.write_text(a, "first weights")
        first.write_text(b, "first sidecar")
        first.commit()
    with second, pytest.raises(FileExistsError, match="created by someone else"):
        second.write_text(a, "second weights")
        second.write_text(b, "second sidecar")
        second.commit()
    assert files_in(tmp_path) == {"m.safetensors": b"first weights", "m.json": b"first sidecar"}


def test_a_lost_race_on_the_second_file_rolls_back_the_first(tmp_path):
    a, b = tmp_path / "m.safetensors", tmp_path / "m.json"
    late = io.Outputs([a, b])
    b.write_text("someone else's sidecar")  # appears after the plan, before the commit
    with late, pytest.raises(FileExistsError):
        late.write_text(a, "weights")
        late.write_text(b, "sidecar")
        late.commit()
    assert files_in(tmp_path) == {"m.json": b"someone else's sidecar"}


def test_files_and_folders_follow_the_umask(tmp_path):
    target = tmp_path / "made" / "x.json"
    previous = os.umask(0o027)
    try:
        with io.Outputs([target]) as out:
            out.write_text(target, "{}")
            out.commit()
    finally:
        os.umask(previous)
    assert _mode(target) == 0o640 and _mode(target.parent) == 0o750


def test_an_unwritable_destination_fails_before_any_work(tmp_path):
    file = tmp_path / "plain"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        io.Outputs([file / "out.json"])
    # /proc refuses new files even to root, where a permission bit test would pass
    with pytest.raises(PermissionError, match="not writable"):
        io.Outputs([Path("/proc/famr-test/out.json")])
    with pytest.raises(IsADirectoryError, match="existing folder"):
        io.Outputs([tmp_path])


# --- the command line: inputs are never outputs ---------------------------------------------

INPUTS = ("m.safetensors", "m.json", "a.safetensors", "a.json", "ids.txt", "cfg.json")


def _inputs_folder(checkpoint: Path, folder: Path) -> None:
    copy_checkpoint(checkpoint, folder / "m.safetensors")
    copy_checkpoint(checkpoint, folder / "a.safetensors")
    (folder / "ids.txt").write_text("1 2 3\n")
    (folder / "cfg.json").write_text('{"epochs": 1}')


def _alias(folder: Path, target: str, how: str, name: str) -> Path:
    """A path named ``name`` that reaches the input ``target`` in the way ``how`` says."""
    if how == "same":
        return folder / target
    if how == "dotdot":
        (folder / "sub").mkdir(exist_ok=True)
        return folder / "sub" / ".." / target
    path = folder / name
    if how == "symlink":
        path.symlink_to(folder / target)
    else:
        os.link(folder / target, path)
    return path


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    role=st.sampled_from(["out", "sidecar", "audit"]),
    target=st.sampled_from(INPUTS),
    how=st.sampled_from(["same", "dotdot", "symlink", "hardlink"]),
    overwrite=st.booleans(),
)
def test_no_output_of_forget_is_ever_one_of_its_inputs(
    checkpoint, tmp_path_factory, role, target, how, overwrite
):
    """Every input (checkpoint, anchor, their metadata, the index file, the config file)
    against every output (the model, its metadata, the audit record), reached by the same
    path, a path through "..", a symlink or a hard link, with and without --overwrite. If the
    check missed one, the run would go ahead (finetune takes this sample request) and write."""
    folder = tmp_path_factory.mktemp("alias")
    _inputs_folder(checkpoint, folder)
    if role == "out":  # --out must name a .safetensors file
        if how in ("same", "dotdot") and not target.endswith(".safetensors"):
            target, how = "a.safetensors", how
        out = _alias(folder, target, how, "o.safetensors")
        audit = None
    elif role == "sidecar":  # o.safetensors writes o.json beside it
        if how in ("same", "dotdot"):
            target = "a.json" if target.startswith("a") else "m.json"
            out = _alias(folder, target, how, "unused").with_suffix(".safetensors")
        else:
            _alias(folder, target, how, "o.json")
            out = folder / "o.safetensors"
        audit = None
    else:
        out = folder / "o.safetensors"
        audit = _alias(folder, target, how, "o.audit.json")
    before = files_in(folder)
    argv = ["forget", "--checkpoint", str(folder / "m.safetensors")]
    argv += ["--indices", str(folder / "ids.txt"), "--anchor", str(folder / "a.safetensors")]
    argv += ["--config", str(folder / "cfg.json"), "--method", "finetune"]
    argv += ["--out", str(out), "--quiet"]
    argv += ["--audit", str(audit)] if audit else []
    argv += ["--overwrite"] if overwrite else []
    code, _, err = run_cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is the input" in err or "named twice" in err, err
    assert files_in(folder) == before


def test_indices_file_and_reference_are_inputs_too(checkpoint, tmp_path):
    _inputs_folder(checkpoint, tmp_path)
    before = files_in(tmp_path)
    base = ["forget", "--checkpoint", str(tmp_path / "m.safetensors"), "--quiet", "--overwrite"]
    for argv in (
        [
            *base,
            "--indices",
            str(tmp_path / "ids.txt"),
            "--out",
            str(tmp_path / "o.safetensors"),
            "--audit",
            str(tmp_path / "ids.txt"),
        ],
        [
            *base,
            "--classes",
            "3",
            "--reference",
            str(tmp_path / "a.safetensors"),
            "--out",
            str(tmp_path / "a.safetensors"),
        ],
    ):
        code, _, err = run_cli(argv)
        assert code == 2 and "is the input" in err, err
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("command", ["certify", "sweep-lambda"])
def test_folder_commands_never_empty_their_folder(checkpoint, tmp_path, monkeypatch, command):
    """Issue 19, item 1: `certify --out c --overwrite` deleted c's checkpoints and record."""
    copy_checkpoint(checkpoint, tmp_path / "m.safetensors")
    forgot = tmp_path / "f3.safetensors"
    assert (
        run_cli(
            [
                "forget",
                "--checkpoint",
                str(tmp_path / "m.safetensors"),
                "--classes",
                "3",
                "--epochs",
                "2",
                "--set",
                "recipe=head",  # famr's quick recipe: the files are what is tested
                "--out",
                str(forgot),
                "--quiet",
            ]
        )[0]
        == 0
    )
    (tmp_path / "notes.txt").write_text("mine")
    before = files_in(tmp_path)
    monkeypatch.chdir(tmp_path)
    if command == "certify":
        argv = ["certify", "--original", "m.safetensors", "--unlearned", "f3.safetensors"]
        argv += ["--classes", "3", "--out", ".", "--overwrite"]
        made = {"certificate.json", "certificate.md"}
    else:
        argv = ["sweep-lambda", "--checkpoint", "m.safetensors", "--classes", "3"]
        argv += ["--lams", "0.1,1", "--set", "epochs=2", "--out", ".", "--overwrite"]
        made = {"sweep.json", "sweep.md", "lambda_path.png"}
    code, _, err = run_cli(argv)
    assert code in (0, 3), err
    after = files_in(tmp_path)
    assert set(after) == set(before) | made  # nothing removed, no stray temporary folder
    assert all(after[name] == data for name, data in before.items())
    assert _mode(tmp_path / sorted(made)[0]) == 0o666 & ~_umask()


def test_a_folder_output_that_is_a_file_is_refused_untouched(checkpoint, tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"precious")
    argv = ["certify", "--original", str(checkpoint), "--unlearned", str(checkpoint)]
    code, _, err = run_cli([*argv, "--classes", "3", "--out", str(file), "--overwrite"])
    assert code == 2 and "is a file" in err
    assert file.read_bytes() == b"precious"


def test_audit_at_an_existing_folder_fails_before_the_run(checkpoint, tmp_path):
    """Issue 19, item 4: weights and sidecar were written, then the audit record crashed."""
    (tmp_path / "records").mkdir()
    argv = ["forget", "--checkpoint", str(checkpoint), "--classes", "3"]
    argv += ["--out", str(tmp_path / "o.safetensors"), "--audit", str(tmp_path / "records")]
    code, out, err = run_cli([*argv, "--quiet"])
    assert code == 2 and "existing folder" in err and out == ""
    assert files_in(tmp_path) == {}


def test_an_output_in_a_read_only_place_fails_before_the_run(checkpoint):
    argv = ["forget", "--checkpoint", str(checkpoint), "--classes", "3"]
    code, out, err = run_cli([*argv, "--out", "/proc/famr/o.safetensors", "--quiet"])
    assert code == 2 and "not writable" in err and out == ""


def test_two_concurrent_runs_never_both_report_success(checkpoint, tmp_path):
    """Issue 19, item 2: two `famr forget --out same` at once both printed "saved"."""
    out = tmp_path / "same.safetensors"
    argv = [sys.executable, "-m", "famr.cli", "forget", "--checkpoint", str(checkpoint)]
    argv += ["--classes", "3", "--epochs", "2", "--set", "recipe=head", "--out", str(out)]
    argv += ["--quiet"]
    runs = [
        subprocess.Popen(
            [*argv, "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for seed in (1, 2)
    ]
    results = [(r.wait(timeout=300), r.stdout.read(), r.stderr.read()) for r in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert len(loser.strip().splitlines()) == 1 and (
        "created by someone else" in loser or "already exists" in loser
    )
    # what is on disk is one run's result, whole: weights, metadata and record agree
    meta = json.loads(io.sidecar_path(out).read_text())
    record = json.loads(out.with_suffix(".audit.json").read_text())
    assert meta["weights_sha256"] == io.sha256_file(out) == record["output"]["sha256"]
    assert record["output"]["metadata_sha256"] == io.sha256_file(io.sidecar_path(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "same.audit.json",
        "same.json",
        "same.safetensors",
    ]


# --- what a review of the output layer found ----------------------------------------------


def test_one_folder_spelled_two_ways_is_locked_once(tmp_path, monkeypatch):
    """flock locks belong to an open file: locking the same folder twice (a relative and an
    absolute spelling) waited on itself forever."""
    import threading

    monkeypatch.chdir(tmp_path)
    files = [Path("a.txt"), tmp_path / "sub" / ".." / "b.txt", tmp_path / "c.txt"]
    done = threading.Event()

    def run():
        with io.Outputs(files) as out:
            for f in files:
                out.write_text(f, f.name)
            out.commit()
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    (tmp_path / "sub").mkdir()
    worker.start()
    assert done.wait(30), "commit hung on its own lock"
    assert {p.name for p in tmp_path.iterdir()} == {"a.txt", "b.txt", "c.txt", "sub"}


def test_a_real_interrupt_during_the_commit_is_delivered_after_it(tmp_path, monkeypatch):
    """With another thread alive, a masked signal still reached Python inside the block: now
    the handlers only note it while the files are placed, and it is raised once they are."""
    import signal
    import threading

    blocker = threading.Event()
    threading.Thread(target=blocker.wait, daemon=True).start()  # a thread, as torch starts
    place = io.Outputs._place

    def place_and_interrupt(self, destination, tmp):
        # to the main thread, where Python runs its handlers: a process-wide kill may land on
        # any thread, and in the full suite (torch's threads alive) the main thread did not
        # always see it within the test (2026-12-07: twice in a full run, never alone)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return place(self, destination, tmp)

    monkeypatch.setattr(io.Outputs, "_place", place_and_interrupt)
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    out = io.Outputs(files)
    with pytest.raises(KeyboardInterrupt):
        with out:
            for f in files:
                out.write_text(f, f.name)
            out.commit()
    blocker.set()
    assert out.committed and files_in(tmp_path) == {"a.txt": b"a.txt", "b.txt": b"b.txt"}


def test_a_folder_that_appears_at_an_output_is_never_moved(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    late = io.Outputs([a, b], overwrite=True)
    b.unlink()
    b.mkdir()
    (b / "precious.txt").write_text("mine")
    with late, pytest.raises(FileExistsError, match="became a folder"):
        late.write_text(a, "new a")
        late.write_text(b, "new b")
        late.commit()
    assert files_in(tmp_path) == {"a.txt": b"old a", "b.txt/precious.txt": b"mine"}


def test_no_output_lies_among_the_data(checkpoint, tmp_path):
    root = tmp_path / "tree"
    for split in ("train", "val"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
    argv = ["forget", "--checkpoint", str(checkpoint), "--classes", "3", "--data-root", str(root)]
    code, _, err = run_cli([*argv, "--out", str(root / "train" / "a" / "o.safetensors")])
    assert code == 2 and "inside --data-root" in err
