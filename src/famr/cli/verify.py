"""``famr verify``: check an audit record against the files, the data and the model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import audit, io
from ..api import evaluate
from ..data.files import evaluation_sets
from ..data.request import spec_from_record
from .common import UsageError, _absolute, _build_data


def _load_record(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"audit record {path!r} not found")
    record = io.read_json(file, "audit record")
    try:
        audit.check_record(record)
    except ValueError as err:
        raise UsageError(f"audit record {path!r} is malformed: {err}") from None
    return record


def cmd_verify(args: argparse.Namespace) -> int:
    if not (args.tolerance >= 0):  # also rejects nan
        raise UsageError(f"--tolerance {args.tolerance!r} is not valid; it must be >= 0")
    record = _load_record(args.record)
    folder = Path(args.record).parent
    request = record["request"]
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append((name, ok, detail))

    files = {}
    for side in ("input", "output"):
        path = folder / record[side]["checkpoint"]
        files[side] = path
        for key, file in (("sha256", path), ("metadata_sha256", io.sidecar_path(path))):
            if not file.is_file():
                check(f"{side} {key}", False, f"{file} is missing")
                continue
            actual = io.sha256_file(file)
            check(f"{side} {key}", actual == record[side][key], f"{file}: {actual}")
    output_intact = all(ok for name, ok, _ in checks if name.startswith("output"))
    if output_intact:
        model, output_meta = io.load_checkpoint(files["output"])
        for name, ok, detail in audit.record_checks(record, output_meta):
            check(name, ok, detail)
    data, derived = _build_data(
        {**request, "data_root": _absolute(args.data_root) or request.get("data_root")}
    )
    spec = spec_from_record(request["forget"], derived)
    splits = spec.split(data.train, data.test, data.num_classes)
    digest = splits.forget_indices_sha256()
    check("forget indices sha256", digest == request["forget_indices_sha256"], digest)
    count = len(splits.forget_indices)
    check("forget count", count == request["forget_count"], str(count))
    if not output_intact:
        check("forget metrics", False, "not re-evaluated: the output checkpoint does not match")
    else:
        wanted = [m for m in audit.VERIFIED_METRICS if m in record["metrics"]]
        sets = evaluation_sets(splits, request.get("eval_sample"))  # the run's own sample
        measured = evaluate(model, **sets, metrics=wanted, device=args.device)
        for name in wanted:
            gap = abs(measured[name] - record["metrics"][name])
            check(
                name,
                gap <= args.tolerance,
                f"{measured[name]:.4f} (recorded {record['metrics'][name]:.4f})",
            )
    for name, ok, detail in checks:
        print(f"{'ok      ' if ok else 'MISMATCH'} {name}: {detail}")
    print(f"not checked (informational): {', '.join(audit.UNCHECKED)}")
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        print(f"famr verify: {len(failed)} mismatch(es): {', '.join(failed)}", file=sys.stderr)
        return 4
    print(f"verified {args.record}: {len(checks)} checks passed")
    return 0
