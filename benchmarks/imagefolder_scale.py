"""What a forget request costs against the size of the tree: 10 vs 100 classes, file data path.

Writes an ImageNet-100-shaped ImageFolder tree under ``--root`` (a path you give, never inside
the repository): 100 classes of synthetic JPEGs at ImageNet-like sizes (300-500 x 250-400 px,
a smooth colour field with texture noise, quality 90: about 80-110 KiB each), ``--per-class``
training and ``--val-per-class`` validation images per class, reproducible from ``--seed``.
The 10-class tree is the first 10 class folders of the same tree, linked (the same files).

For each tree: a ResNet-20 (64 px) trained for 2 epochs on a seeded 2,000-image sample (the
benchmark needs a model of the tree's shape, not a good one), imported with ``famr import``,
then ``famr forget --classes 0`` on the file data path (and, for contrast, on the tensor
path for the 10-class tree), each in its own process under ``/usr/bin/time``: wall time,
images decoded (from the run record), peak resident memory of the largest process.

    python benchmarks/imagefolder_scale.py --root /tmp/famr-imagenet100 --per-class 300
    python benchmarks/imagefolder_scale.py --root /tmp/t --per-class 8 --val-per-class 2 --quick

Results: benchmarks/results/imagefolder_scale.json and its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from famr import bench

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", required=True, help="where the trees are written (outside the repo)")
    p.add_argument("--per-class", type=int, default=1300, help="training images per class")
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    p.add_argument("--methods", nargs="+", default=["famr", "famr_retain"], help="methods to time")
    p.add_argument("--quick", action="store_true", help="a smoke run: no BENCHMARKS.md update")
    p.add_argument("--out", default=str(HERE.parent / "results" / "imagefolder_scale.json"))
    return p.parse_args(argv)


def generate_tree(root: Path, classes: int, per_class: int, val_per_class: int, seed: int):
    """Write the tree (skipped when ``root/manifest.json`` records the same parameters)."""
    from PIL import Image

    params = {"classes": classes, "per_class": per_class, "val": val_per_class, "seed": seed}
    manifest = root / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text())["params"] == params:
        return json.loads(manifest.read_text())
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} exists and is not a tree this script wrote with {params}")
    rng = np.random.default_rng(seed)
    # a pool of texture noise, cropped at random offsets: per image only a resize and an encode
    pool = [rng.normal(0, 35, (512, 512, 3)).astype(np.int16) for _ in range(8)]
    sizes, start = [], time.perf_counter()
    for split, count in (("train", per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = root / split / f"n{k:08d}"
            folder.mkdir(parents=True)
            tint = rng.integers(0, 256, 3)
            for i in range(count):
                w, h = int(rng.integers(300, 501)), int(rng.integers(250, 401))
                base = rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8)
                base = ((base.astype(np.int16) + tint) // 2).astype(np.uint8)
                smooth = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
                y, x = int(rng.integers(0, 512 - h)), int(rng.integers(0, 512 - w))
                noise = pool[int(rng.integers(0, len(pool)))][y : y + h, x : x + w]
                pixels = np.clip(np.asarray(smooth, dtype=np.int16) + noise, 0, 255)
                path = folder / f"n{k:08d}_{i}.JPEG"
                Image.fromarray(pixels.astype(np.uint8)).save(path, "JPEG", quality=90)
                sizes.append(path.stat().st_size)
    info = {
        "params": params,
        "files": len(sizes),
        "mean_kib": float(np.mean(sizes)) / 1024,
        "gib": float(np.sum(sizes)) / 2**30,
        "seconds": time.perf_counter() - start,
    }
    manifest.write_text(json.dumps(info, indent=1))
    return info


def link_subtree(small: Path, big: Path, classes: int) -> None:
    """``small``: the first ``classes`` class folders of ``big``, as symbolic links."""
    for split in ("train", "val"):
        names = sorted(p.name for p in (big / split).iterdir())[:classes]
        (small / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = small / split / name
            if not link.exists():
                link.symlink_to(big / split / name, target_is_directory=True)


def make_checkpoint(tree: Path, out: Path, image_size: int, seed: int) -> None:
    """A ResNet-20 of the tree's shape, trained 2 epochs on a seeded 2,000-image sample, saved
    as a famr checkpoint (the library's train + ``famr import``)."""
    if out.is_file():
        return
    import safetensors.torch
    import torch

    import famr
    from famr.data.files import sample

    data = famr.load_dataset("imagefolder", tree, image_size=image_size, data_path="files")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = famr.create_model(
            "resnet20", num_classes=data.num_classes, in_channels=3, mean=data.mean, std=data.std
        )
    result = famr.train(model, sample(data.train, 2000, seed), epochs=2, seed=seed)
    weights = out.with_name(out.stem + "-weights.safetensors")
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in result.model.state_dict().items()}, str(weights)
    )
    bench.run_famr(
        ["import", "--weights", str(weights), "--arch", "resnet20"]
        + ["--num-classes", str(data.num_classes), "--out", str(out)]
        + ["--mean", ",".join(map(str, data.mean)), "--std", ",".join(map(str, data.std))]
    )


def measure(tree: Path, checkpoint: Path, out: Path, method: str, path: str, args) -> dict:
    """``famr forget --classes 0`` in its own process: wall time, peak RSS, images decoded."""
    argv = [sys.executable, "-m", "famr", "forget", "--data", "imagefolder"]
    argv += ["--data-root", str(tree), "--image-size", str(args.image_size)]
    argv += ["--data-path", path, "--workers", str(args.workers), "--checkpoint", str(checkpoint)]
    argv += ["--classes", "0", "--method", method, "--out", str(out), "--quiet", "--overwrite"]
    argv += ["--write-anyway"]  # a cost benchmark: a result the retained-accuracy check refuses
    # (a small model on a small tree can drop that far) is still written and measured
    timed = ["/usr/bin/time", "-f", "famr-time %e %M", *argv]
    done = subprocess.run(timed, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"famr forget failed: {done.stderr[-1500:]}")
    line = [t for t in done.stderr.splitlines() if t.startswith("famr-time")][-1]
    wall, rss_kib = line.split()[1:]
    meta = json.loads(out.with_suffix(".json").read_text())
    return {
        "method": method,
        "data_path": path,
        "wall_seconds": float(wall),
        "method_seconds": meta["metrics"]["seconds"],
        "peak_rss_mib": int(rss_kib) / 1024,
        "images_decoded": meta["images_decoded"],
        "forget_acc": meta["metrics"]["forget_acc"],
        "test_retain_acc": meta["metrics"]["test_retain_acc"],
        "eval_sample": meta["request"]["eval_sample"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(args.root).resolve()
    if root == REPO or REPO in root.parents:
        raise SystemExit(f"--root {root} lies inside the repository; give a path outside it")
    big = root / "imagenet100"
    info = generate_tree(big, 100, args.per_class, args.val_per_class, args.seed)
    bench.log(
        f"tree: {info['files']} files, {info['gib']:.2f} GiB, {info['mean_kib']:.0f} KiB each"
    )
    small = root / "imagenet10"
    link_subtree(small, big, 10)
    rows = []
    for classes, tree in ((10, small), (100, big)):
        checkpoint = root / f"resnet20-{classes}.safetensors"
        make_checkpoint(tree, checkpoint, args.image_size, args.seed)
        runs = [(m, "files") for m in args.methods]
        if classes == 10:
            runs.append((args.methods[0], "tensors"))  # the whole tree decoded, for contrast
        for method, path in runs:
            bench.log(f"{classes} classes: {method} on the {path} path")
            row = measure(
                tree, checkpoint, root / "runs" / f"{classes}.safetensors", method, path, args
            )
            rows.append({"classes": classes, "train_images": classes * args.per_class, **row})
    ratios = {}
    for method in args.methods:
        a, b = (
            next(
                r
                for r in rows
                if r["classes"] == c and r["method"] == method and r["data_path"] == "files"
            )
            for c in (10, 100)
        )
        ratios[method] = {
            k: b[k] / a[k] for k in ("wall_seconds", "images_decoded", "peak_rss_mib")
        }
    env = bench.environment()
    command = "python benchmarks/imagefolder_scale.py " + " ".join(sys.argv[1:])
    payload = {
        "benchmark": "imagefolder_scale",
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "environment": env,
        "tree": info,
        "rows": rows,
        "ratio_100_over_10": ratios,
    }
    out = Path(args.out)
    from famr import io

    io.write_text_atomic(out, io.json_text(payload))
    if args.quick:
        return 0
    lines = [
        "## ImageFolder at scale: a forget request against the size of the tree",
        "",
        f"Command: `{command}`; {env['cpu_count']}-core {env['machine']} CPU (kernels "
        f"{env['cpu_capability']}), torch {env['torch']}, {payload['date']}. Tree: 100 classes "
        f"x {args.per_class} training + {args.val_per_class} validation synthetic JPEGs "
        f"(300-500 x 250-400 px, {info['mean_kib']:.0f} KiB on average, {info['gib']:.2f} GiB); "
        "the 10-class tree is its first 10 class folders. Model: ResNet-20 at "
        f"{args.image_size} px (2 epochs on 2,000 images: a model of the right shape, not a good "
        "one). Each row is one `famr forget --classes 0` process under `/usr/bin/time`: wall "
        "time of the whole command (start-up, indexing, decoding, the method, evaluation, "
        "writing), the method's own seconds, images decoded (the run record's "
        "`images_decoded`) and the peak resident memory of the largest process. File path "
        "defaults: evaluation samples of 2,000 images per split, `famr_retain`'s buffer of "
        "5,000.",
        "",
        "| classes | training images | method | data path | wall s | method s | images decoded | peak RSS MiB | forget acc | TA |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['classes']} | {r['train_images']:,} | {r['method']} | {r['data_path']} | "
            f"{r['wall_seconds']:.1f} | {r['method_seconds']:.1f} | {r['images_decoded']:,} | "
            f"{r['peak_rss_mib']:.0f} | {r['forget_acc']:.1f} | {r['test_retain_acc']:.1f} |"
        )
    lines += ["", "100 classes over 10 classes, file path (target: time within 1.3x):", ""]
    for method, ratio in ratios.items():
        lines.append(
            f"- {method}: wall time {ratio['wall_seconds']:.2f}x, images decoded "
            f"{ratio['images_decoded']:.2f}x, peak RSS {ratio['peak_rss_mib']:.2f}x"
        )
    bench.update_benchmarks_md("imagefolder_scale", "\n".join(lines))
    bench.log(f"wrote {out} and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
