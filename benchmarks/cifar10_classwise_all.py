"""The whole class-wise benchmark in one command, timed stage by stage.

Runs, one after the other and with the same arguments:

    1. cifar10_classwise.py --stage train   the original and the retrained models (cached)
    2. famr_study.py                        the configurations, chosen on the validation split
    3. cifar10_classwise.py                 FAMR and every baseline against retraining

and records each stage's wall time, the number of models trained (new files in the cache) and
whether the cache started empty, in benchmarks/results/cifar10_classwise_timing_<profile>.json
and BENCHMARKS.md. Point ``--cache`` at a fresh folder to time the benchmark from an empty cache:

    python benchmarks/cifar10_classwise_all.py --cache /tmp/famr-empty-cache

The stages never load the checkpoints shipped in benchmarks/checkpoints (``FAMR_NO_SHIPPED=1``):
what the cache lacks is trained, and timed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from famr import bench, io

HERE = Path(__file__).resolve().parent

STAGES = (
    ("train", [str(HERE / "cifar10_classwise.py"), "--stage", "train"]),
    ("study", [str(HERE / "famr_study.py")]),
    ("methods", [str(HERE / "cifar10_classwise.py")]),
)


def models_in(cache: Path) -> int:
    return len(list(cache.glob("*.safetensors"))) if cache.is_dir() else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cache", default=str(HERE / "cache"))
    p.add_argument("--profile", default="cpu")
    args, rest = p.parse_known_args(argv)
    if "--quick" in rest:
        raise SystemExit("--quick is not timed here: run cifar10_classwise.py --quick directly")
    cache = Path(args.cache)
    passed = ["--cache", str(cache), "--profile", args.profile, *rest]
    started_with = models_in(cache)
    stages = []
    total = time.perf_counter()
    for name, command in STAGES:
        before = models_in(cache)
        start = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] stage {name}", flush=True)
        done = subprocess.run(
            [sys.executable, *command, *passed], env={**os.environ, "FAMR_NO_SHIPPED": "1"}
        )
        if done.returncode != 0:
            print(f"stage {name} failed (exit {done.returncode}); no timing written", flush=True)
            return done.returncode
        stages.append(
            {
                "stage": name,
                "seconds": time.perf_counter() - start,
                "models_trained": models_in(cache) - before,
            }
        )
    payload = {
        "benchmark": "cifar10_classwise_all",
        "command": "python benchmarks/cifar10_classwise_all.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "environment": bench.environment(),
        "cache_models_at_start": started_with,
        "stages": stages,
        "total_seconds": time.perf_counter() - total,
    }
    out = HERE / "results" / f"cifar10_classwise_timing_{args.profile}.json"
    io.write_text_atomic(out, io.json_text(payload))
    write_table(payload, args.profile)
    return 0


def write_table(payload, profile: str) -> None:
    env = payload["environment"]
    empty = payload["cache_models_at_start"] == 0
    lines = [
        f"## The whole class-wise benchmark, timed ({profile} profile)",
        "",
        f"Command: `{payload['command']}`; {env['cpu_count']}-core {env['machine']} CPU, "
        f"torch {env['torch']}, {payload['date']}. The cache held "
        f"{payload['cache_models_at_start']} models at the start"
        + (" (an empty cache)." if empty else " (not an empty cache)."),
        "",
        "| stage | models trained | seconds | minutes |",
        "|---|---:|---:|---:|",
    ]
    for s in payload["stages"]:
        lines.append(
            f"| {s['stage']} | {s['models_trained']} | {s['seconds']:.0f} | {s['seconds'] / 60:.1f} |"
        )
    t = payload["total_seconds"]
    lines.append(f"| **total** | | **{t:.0f}** | **{t / 60:.1f}** ({t / 3600:.2f} h) |")
    bench.update_benchmarks_md(f"cifar10_classwise_timing_{profile}", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
