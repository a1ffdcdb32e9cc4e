"""benchmarks/gpu_check.sh, the prepared GPU check, end to end on the CPU with tiny settings:
every step runs, writes its results where it is told, and leaves BENCHMARKS.md alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.mark.skipif(
    not (SHARED / "cifar10").is_dir() or not (SHARED / "tiny-imagenet-200-sub10").is_dir(),
    reason="needs ../shared/data (cifar10, tiny-imagenet-200-sub10)",
)
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils timeout")
def test_gpu_check_runs_end_to_end_on_the_cpu_with_tiny_settings(tmp_path):
    before = (REPO / "BENCHMARKS.md").read_bytes()
    env = {
        **os.environ,
        "GPU_CHECK_TINY": "1",
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "FAMR_NO_TCMALLOC": "1",
    }
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    cifar = json.loads((tmp_path / "gpu_check_cifar10.json").read_text())
    assert cifar["arch"] == "resnet20" and cifar["train_config"]["epochs"] == 1
    runs = cifar["blocks"][0]["runs"]
    assert set(runs) == {"original", "retrain", "famr", "scrub"}
    for name in runs:  # the attack columns for every row, the retrained model's included
        assert 0 <= runs[name]["probe_test_forget_acc"] <= 100, name
        assert 0 <= runs[name]["relearn_forget_acc"] <= 100, name
    images = json.loads((tmp_path / "gpu_check_imagefolder.json").read_text())
    assert set(images["rows"]) == {"train", "predict (files path)", "famr"}
    assert images["rows"]["predict (files path)"]["images_per_s"] > 0
    assert "verified" in done.stdout and "torchrun (gloo) done" in done.stdout
    assert (REPO / "BENCHMARKS.md").read_bytes() == before
