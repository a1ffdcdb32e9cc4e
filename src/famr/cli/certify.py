"""``famr certify``: the FAMR certificate of an unlearned checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..data.files import EVAL_SAMPLE, ImageFiles, sample
from ..data.tensors import to_tensors
from . import common
from .common import (
    UsageError,
    _check_data_fits,
    _folder_outputs,
    _load_data,
    _parse_classes,
    _plan,
    _splits_for,
)

CERTIFY_FILES = ("certificate.json", "certificate.md")


def _images(dataset, first: int | None = None):
    """The images of ``dataset`` (its first ``first``; of image files, a seeded sample of that
    many, so that only they are decoded)."""
    if isinstance(dataset, ImageFiles):
        dataset = sample(dataset, first)
    return to_tensors(dataset)[0][:first]


def cmd_certify(args: argparse.Namespace) -> int:
    from ..report import certificate_markdown
    from ..theory import certify

    out = Path(args.out)
    plan = _plan(args, _folder_outputs(args.out, CERTIFY_FILES))
    original, _ = io.load_checkpoint(args.original)
    unlearned, meta = io.load_checkpoint(args.unlearned)
    _check_certify_request(args, meta)
    config = meta.get("config") or {}
    lam = args.lam if args.lam is not None else config.get("lam")
    target = args.target or config.get("target", "uniform")
    if lam is None:
        raise UsageError("the unlearned checkpoint records no lambda (not a FAMR run); pass --lam")
    if not (isinstance(lam, (int, float)) and lam == lam and lam >= 0 and lam != float("inf")):
        raise UsageError(f"lam={lam!r} is not valid; it must be a finite number >= 0")
    data = _load_data(args, meta.get("validation"))
    _check_data_fits(meta, data, "--unlearned")
    classes = _parse_classes(args.classes)
    splits = _splits_for(data, classes)
    support = None
    if target == "retained":
        # classes forgotten by earlier requests were left out of the run's target too
        support = torch.ones(data.num_classes, dtype=torch.bool)
        support[sorted(set(classes) | set(meta.get("forgotten_classes", [])))] = False
    checks = {
        "retain": _images(splits.retain, 2000),
        "test_retain": _images(splits.test_retain, EVAL_SAMPLE if data.path == "files" else None),
    }
    if splits.test_forget is not None:
        checks["test_forget"] = _images(splits.test_forget)
    cert = certify(
        original,
        unlearned,
        _images(splits.forget),
        float(lam),
        support,
        data.num_classes,
        check_images=checks,
    )
    payload = {
        "original": str(args.original),
        "unlearned": str(args.unlearned),
        "forget": {"classes": classes},
        "target": target,
        "certificate": cert,
    }
    lines = [
        f"# FAMR certificate: {args.unlearned}",
        "",
        certificate_markdown(cert),
        "",
        "## Output deviation",
        "",
        "| data | mean KL | max KL | changed predictions |",
        "|---|---:|---:|---:|",
    ]
    for name, dev in cert["output_deviation"].items():
        lines.append(
            f"| {name} | {dev['mean_kl']:.4g} | {dev['max_kl']:.4g} | {100 * dev['changed_predictions']:.2f} % |"
        )
    if "newton" in cert and "cosine" in cert["newton"]:
        n = cert["newton"]
        lines += [
            "",
            "## Newton (influence) step vs the achieved solution",
            "",
            f"- cosine {n['cosine']:.4f}, relative error {n['relative_error']:.4g}",
            f"- objective at the Newton step {n['objective_at_newton_step']:.6g} vs achieved {cert['objective_after']:.6g}",
        ]
    common.EXIT_WHEN_WRITTEN[0] = 0 if cert["certified"] else 3
    with plan:
        plan.write_text(out / "certificate.json", io.json_text(payload))
        plan.write_text(out / "certificate.md", "\n".join(lines) + "\n")
        plan.commit()
    print(certificate_markdown(cert))
    print(f"wrote {out}/certificate.json and certificate.md")
    return 0 if cert["certified"] else 3


def _check_certify_request(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """A certificate is about one request and one pair of models: ``--classes`` must be the
    classes the unlearned checkpoint's metadata says it forgot, and ``--original`` the model it
    was made from (or anchored to), whenever the metadata records them."""
    classes = sorted(set(_parse_classes(args.classes)))
    recorded = meta.get("forget")
    if isinstance(recorded, dict):
        kind = recorded.get("kind", "classes")
        if kind != "classes":
            raise UsageError(
                f"--unlearned {args.unlearned!r} forgot a {kind!r} request; certify checks "
                "class requests only"
            )
        if sorted(recorded.get("classes", [])) != classes:
            raise UsageError(
                f"--classes {args.classes!r} is not the request recorded in --unlearned's "
                f"metadata (classes {recorded.get('classes')}); certify that request"
            )
    known = {meta.get("source_sha256"), (meta.get("anchor") or {}).get("sha256")} - {None}
    if known and io.sha256_file(args.original) not in known:
        raise UsageError(
            f"--original {args.original!r} is not the model --unlearned was made from or "
            f"anchored to (recorded sha256 {', '.join(sorted(known))})"
        )
