"""Audit records of forgetting requests: what one holds, and the checks ``famr verify`` runs.

``famr forget`` writes one record per request beside its output checkpoint. Every field is
either checked by :func:`record_checks` / ``famr verify`` or listed in :data:`UNCHECKED` with
the reason, and a record that lacks a field its version must have, or holds a field of the
wrong kind, is refused as malformed before anything is compared.

What is checked, and how:

- ``input`` / ``output``: the sha256 of each checkpoint and of its metadata, recomputed from
  the files.
- ``method``, ``config``, ``seeds``, ``metrics``, ``certificate``, ``anchor``,
  ``deviation_chain``, ``checks`` and the request's ``forget`` spec and index hash: compared
  with the output checkpoint's metadata, whose own hash is checked first. Editing one of them
  in the record alone is a mismatch.
- ``request``: the forget set is rebuilt from the recorded data and spec and its index hash
  recomputed; the forget metrics are re-evaluated on the output model.

This detects an edit to any one file. It is not a signature: someone who rewrites the
weights, the metadata and the record consistently is not detected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

AUDIT_VERSION = 3

# Informational fields, recorded but never checked (they describe the run, they do not define
# its result): when and how it was started, and on what software.
UNCHECKED = {
    "created_utc": "when the run finished (a clock reading)",
    "command": "the command line as typed (the request fields define the run)",
    "environment": "library versions and machine facts",
}

VERIFIED_METRICS = ("forget_acc", "ua", "test_forget_acc", "mia_efficacy")

# mirrored into the checkpoint's metadata only since version 2 of the record
V2_MIRRORED = ("request", "checks")
# record field -> output metadata field that must hold the same value
MIRRORED = {
    "request": "request",
    "method": "method",
    "config": "config",
    "metrics": "metrics",
    "certificate": "certificate",
    "anchor": "anchor",
    "deviation_chain": "deviation_chain",
    "checks": "checks",
}


def _is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_file_entry(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and isinstance(v.get("checkpoint"), str)
        and bool(v["checkpoint"])
        and _is_sha256(v.get("sha256"))
        and _is_sha256(v.get("metadata_sha256"))
    )


def _is_metrics(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        for x in v.values()
    )


def _is_validation(v: Any) -> bool:
    return v is None or (
        isinstance(v, dict)
        and set(v) == {"fraction", "seed"}
        and isinstance(v["fraction"], float)
        and 0 < v["fraction"] < 1
        and _is_int(v["seed"])
    )


# the request as famr forget writes it: exactly these keys (a version 1 record had no
# "validation", versions 1 and 2 none of the data path's keys), each of its kind
_REQUEST = {
    "data": _is_str,
    "data_root": _optional(_is_str),
    "classes_file": _optional(_is_str),
    "image_size": _optional(_is_int),
    "coarse": _optional(_is_str),
    "style": _optional(_is_str),
    "style_seed": _is_int,
    "validation": _is_validation,
    "forget": lambda v: isinstance(v, dict),
    "forget_count": lambda v: _is_int(v) and v >= 1,
    "forget_indices_sha256": _is_sha256,
    "forget_indices_hash": _is_str,
    "holdout": _optional(_is_str),
    # what the run read (version 3): the path asked for and the one used, the evaluation
    # sample per split and the retain limit (null = all)
    "data_path": _optional(_is_str),
    "data_path_used": _optional(_is_str),
    "eval_sample": _optional(lambda v: _is_int(v) and v >= 1),
    "retain_limit": _optional(lambda v: _is_int(v) and v >= 1),
}
_DATA_PATH_KEYS = {"data_path", "data_path_used", "eval_sample", "retain_limit"}


def _is_request(v: Any, version: int) -> bool:
    keys = set(_REQUEST) - ({"validation"} if version == 1 else set())
    keys -= _DATA_PATH_KEYS if version < 3 else set()
    return isinstance(v, dict) and set(v) == keys and all(_REQUEST[k](v[k]) for k in keys)


FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "famr_audit_version": (_is_int, "an integer"),
    "created_utc": (_is_str, "a time stamp"),
    "command": (_is_str, "a command line"),
    "request": (
        lambda v: _is_request(v, AUDIT_VERSION),
        f"an object with exactly {', '.join(_REQUEST)}, each of its kind",
    ),
    "input": (_is_file_entry, "an object with checkpoint, sha256 and metadata_sha256"),
    "output": (_is_file_entry, "an object with checkpoint, sha256 and metadata_sha256"),
    "method": (_is_str, "a method name"),
    "config": (lambda v: isinstance(v, dict), "a config object"),
    "seeds": (
        lambda v: (
            isinstance(v, dict) and _is_int(v.get("method")) and _optional(_is_int)(v.get("forget"))
        ),
        "an object with integer seeds method and forget",
    ),
    "metrics": (_is_metrics, "an object of finite numbers"),
    "certificate": (lambda v: v is None or isinstance(v, dict), "a certificate object or null"),
    "anchor": (lambda v: v is None or isinstance(v, dict), "an anchor object or null"),
    "deviation_chain": (lambda v: isinstance(v, dict), "a deviation chain object"),
    "checks": (lambda v: isinstance(v, dict), "the result checks object"),
    "environment": (lambda v: isinstance(v, dict), "an object"),
}

# what each version of the record must hold (version 1 had no result checks)
REQUIRED = {
    1: tuple(k for k in FIELDS if k != "checks"),
    2: tuple(FIELDS),
    3: tuple(FIELDS),
}


def check_record(record: Any) -> None:
    """Raise ``ValueError`` naming the first field of ``record`` that is missing, malformed,
    or not one its version has."""
    if not isinstance(record, dict):
        raise ValueError("the audit record is not a JSON object")
    version = record.get("famr_audit_version")
    if not _is_int(version) or version not in REQUIRED:
        raise ValueError(
            f"famr_audit_version={version!r} is not known; this famr reads "
            f"{', '.join(map(str, REQUIRED))}"
        )
    extra = sorted(set(record) - set(REQUIRED[version]))
    if extra:  # a field its version never had: not a record famr wrote
        raise ValueError(
            f"the audit record holds fields a version {version} record has not: {extra}"
        )
    for key in REQUIRED[version]:
        if key not in record:
            raise ValueError(f"the audit record lacks {key!r}")
        ok, expected = FIELDS[key]
        if key == "request":
            ok = lambda v: _is_request(v, version)  # noqa: E731
        if not ok(record[key]):
            raise ValueError(f"the audit record's {key!r} is not valid; it must be {expected}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def record_checks(
    record: dict[str, Any], output_meta: dict[str, Any]
) -> list[tuple[str, bool, str]]:
    """The record's fields compared with the output checkpoint's metadata (whose own hash the
    caller has checked): ``[(check name, ok, detail)]``."""
    out = []
    version = record["famr_audit_version"]
    for field, meta_field in MIRRORED.items():
        if field not in record and meta_field not in output_meta:
            continue  # an older record and checkpoint, both without it
        if version == 1 and field in V2_MIRRORED and meta_field not in output_meta:
            continue  # a version-1 checkpoint did not carry these (its record still must match)
        same = _canonical(record.get(field)) == _canonical(output_meta.get(meta_field))
        out.append(
            (
                f"record {field}",
                same,
                "matches the output metadata"
                if same
                else "differs from the output checkpoint's metadata",
            )
        )
    request = record["request"]
    pairs = [
        ("record forget spec", request["forget"], output_meta.get("forget")),
        (
            "record forget indices sha256",
            request["forget_indices_sha256"],
            output_meta.get("forget_indices_sha256"),
        ),
        ("record input sha256", record["input"]["sha256"], output_meta.get("source_sha256")),
        ("record method seed", record["seeds"]["method"], output_meta.get("seed")),
        ("record config seed", record["seeds"]["method"], (record["config"] or {}).get("seed")),
    ]
    for name, mine, theirs in pairs:
        same = _canonical(mine) == _canonical(theirs)
        out.append((name, same, "matches" if same else f"{mine!r} vs {theirs!r}"))
    forget_seed = (
        request["forget"].get("seed") if request["forget"].get("kind") == "random" else None
    )
    same = record["seeds"].get("forget") == forget_seed
    out.append(
        ("record forget seed", same, "matches the spec" if same else "differs from the spec")
    )
    return out


def deviation_chain(
    input_meta: dict[str, Any],
    source_sha256: str,
    anchor: dict[str, Any] | None,
    certificate: dict[str, Any] | None,
) -> dict[str, Any]:
    """How far the output may be from the first model of a sequence of requests.

    Each certified FAMR step bounds ||theta_out - theta_anchor||. Anchored to its input (the
    default), the bounds add up along the chain by the triangle inequality; anchored to the
    first model, the step's own bound already covers the whole distance. ``bound`` is
    ``None`` once any step in the chain had no certificate.

    Args:
        input_meta: The input checkpoint's metadata (its ``deviation_chain``, if any).
        source_sha256: The input checkpoint's weights hash.
        anchor: ``{"sha256": ...}`` of an explicit anchor checkpoint, or ``None``.
        certificate: The step's certificate, or ``None``.
    """
    previous = input_meta.get("deviation_chain") or {
        "origin_sha256": source_sha256,
        "steps": [],
        "bound": 0.0,
    }
    bound = certificate["final_bound"] if certificate and certificate["certified"] else None
    step = {
        "input_sha256": source_sha256,
        "anchor_sha256": anchor["sha256"] if anchor else source_sha256,
        "bound": bound,
    }
    if bound is None:
        total = None
    elif anchor and anchor["sha256"] == previous["origin_sha256"]:
        total = bound
    elif anchor:
        total = None  # anchored to a model outside the chain
    else:
        total = None if previous["bound"] is None else previous["bound"] + bound
    return {
        "origin_sha256": previous["origin_sha256"],
        "steps": [*previous["steps"], step],
        "bound": total,
    }


def result_checks(
    input_test_acc: float,
    output_test_acc: float,
    certificate: dict[str, Any] | None,
    *,
    max_retain_drop: float,
    write_anyway: bool = False,
) -> dict[str, Any]:
    """Whether a result may be written: a FAMR run must be certified, and no method may cost
    the retained data more than ``max_retain_drop`` points of test accuracy against the input
    model (a collapse is not an unlearning result, whatever else it scores).

    Returns:
        ``input_test_retain_acc``, ``retain_drop``, ``max_retain_drop``, ``refused`` (every
        reason, or ``None``) and ``written_anyway``.
    """
    drop = input_test_acc - output_test_acc
    reasons = []
    if certificate is not None and not certificate["certified"]:
        if not certificate["objective_decreased"]:
            why = (
                "the anchored objective did not decrease: "
                f"{certificate['objective_before']:.6g} -> {certificate['objective_after']:.6g}"
            )
        elif not certificate["final_bound"] or not math.isfinite(certificate["final_bound"]):
            why = f"lam = {certificate['lam']:g} gives no finite bound on ||theta - theta_0||"
        else:
            why = "the distance moved exceeds the bound"
        reasons.append(f"the run is not certified ({why})")
    if drop > max_retain_drop:
        reasons.append(
            f"test accuracy on the retained data fell {drop:.2f} points ({input_test_acc:.2f} % "
            f"-> {output_test_acc:.2f} %), more than --max-retain-drop {max_retain_drop:g}"
        )
    refused = "; and ".join(reasons) or None
    return {
        "input_test_retain_acc": input_test_acc,
        "retain_drop": drop,
        "max_retain_drop": max_retain_drop,
        "refused": refused,
        "written_anyway": bool(refused and write_anyway),
    }


INDEX_HASH = "sha256 of the sorted training-set indices as little-endian int64"


def request_record(data_request: dict[str, Any], spec: Any, splits: Any, holdout: str | None):
    """The ``request`` of an audit record (also stored in the output checkpoint's metadata):
    the data request, the forget spec, how many examples it selects and their indices' hash."""
    return {
        **data_request,
        "forget": spec.to_dict(),
        "forget_count": len(splits.forget_indices),
        "forget_indices_sha256": splits.forget_indices_sha256(),
        "forget_indices_hash": INDEX_HASH,
        "holdout": holdout,
    }


def output_metadata(
    input_meta: dict[str, Any],
    request: dict[str, Any],
    result: Any,
    *,
    forgotten_classes: list[int],
    metrics: dict[str, float],
    source: str,
    source_sha256: str,
    anchor: dict[str, Any] | None,
    chain: dict[str, Any],
    checks: dict[str, Any],
    environment: dict[str, Any],
) -> dict[str, Any]:
    """The unlearned checkpoint's metadata: what the record mirrors, plus what a later request
    on this checkpoint needs (architecture, forgotten classes, validation split, chain)."""
    from .config import config_dict

    return {
        "arch": input_meta["arch"],
        "arch_args": input_meta["arch_args"],
        "dataset": request["data"],
        "forget": request["forget"],
        "forget_indices_sha256": request["forget_indices_sha256"],
        "forgotten_classes": forgotten_classes,
        "validation": input_meta.get("validation"),
        "method": result.method,
        "config": config_dict(result.config),
        "seed": result.config.seed,
        "metrics": metrics,
        "certificate": result.certificate,
        "history": result.history,
        "source_checkpoint": source,
        "source_sha256": source_sha256,
        "anchor": anchor,
        "deviation_chain": chain,
        "checks": checks,
        "request": request,  # the audit record's request, checked against it by famr verify
        "environment": environment,
    }


def build_record(
    output_meta: dict[str, Any],
    *,
    input_entry: dict[str, str],
    output_entry: dict[str, str],
    forget_seed: int | None,
    command: str,
    created_utc: str,
) -> dict[str, Any]:
    """The audit record of one request, from the output checkpoint's metadata and the two
    checkpoints' entries (``checkpoint`` path relative to the record's folder, ``sha256``,
    ``metadata_sha256``)."""
    return {
        "famr_audit_version": AUDIT_VERSION,
        "created_utc": created_utc,
        "command": command,
        "request": output_meta["request"],
        "input": input_entry,
        "output": output_entry,
        "method": output_meta["method"],
        "config": output_meta["config"],
        "seeds": {"method": output_meta["seed"], "forget": forget_seed},
        "metrics": output_meta["metrics"],
        "certificate": output_meta["certificate"],
        "anchor": output_meta["anchor"],
        "deviation_chain": output_meta["deviation_chain"],
        "checks": output_meta["checks"],
        "environment": output_meta["environment"],
    }
