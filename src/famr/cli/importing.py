"""``famr import``: another code base's weights as a famr checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import io
from ..models import create_model
from ..models.hub import hf_config_fields
from .common import UsageError, _checkpoint_out, _floats, _plan


def cmd_import(args: argparse.Namespace) -> int:
    from ..models.external import load_external

    out = _checkpoint_out(args.out)
    plan = _plan(args, [out, io.sidecar_path(out)])
    renames = []
    for item in args.rename:
        if "=" not in item:
            raise UsageError(f"--rename {item!r} is not valid; use OLD=NEW")
        renames.append(tuple(item.split("=", 1)))
    arch, hf_fields, hf_classes = _hf_arch(args.arch, args.hf_config)
    num_classes = args.num_classes if args.num_classes is not None else (hf_classes or 10)
    arch_args: dict[str, Any] = {"num_classes": num_classes, "in_channels": args.in_channels}
    if hf_fields is not None:
        arch_args["config"] = hf_fields
    for name in ("mean", "std"):
        values = _floats(getattr(args, name), name)
        if values is not None:
            arch_args[name] = values
    from ..models import head_name
    from ..models.external import map_keys, read_state_dict, read_transformers_state_dict
    from ..models.hub import replace_head

    model = create_model(arch, **arch_args)
    if hf_fields is not None:  # read by transformers' own loader (it renames keys)
        state = read_transformers_state_dict(_hf_config_file(args.hf_config), args.weights)
    else:
        state = read_state_dict(args.weights)
    replaced = None
    if args.replace_head:
        # build the model with the file's class count, load it, then swap in a fresh head
        own_head = head_name(model) + ".weight"
        prefix = getattr(model, "external_prefix", "")
        mapped = map_keys(state, strip_prefix=args.strip_prefix, renames=renames)
        key = next((k for k in (own_head, own_head.removeprefix(prefix)) if k in mapped), None)
        if key is None:
            raise UsageError(
                f"--replace-head: the weights have no classifier {own_head!r}; map the keys "
                "with --strip-prefix / --rename"
            )
        source_classes = int(mapped[key].shape[0])
        model = create_model(arch, **{**arch_args, "num_classes": source_classes})
        replaced = {"from_classes": source_classes, "seed": args.seed}
    load_external(model, args.weights, strip_prefix=args.strip_prefix, renames=renames, state=state)
    if replaced is not None:
        replace_head(model, num_classes, seed=args.seed)
    meta = {
        "arch": arch,
        "arch_args": arch_args,
        "imported_from": str(args.weights),
        "key_mapping": {"strip_prefix": args.strip_prefix, "renames": renames},
        "replaced_head": replaced,
    }
    with plan:
        io.save_checkpoint(out, model, meta, stage=plan)
        plan.commit()
    print(f"imported {args.weights} as {arch}; saved {out}")
    return 0


def _hf_arch(arch: str, hf_config: str | None) -> tuple[str, dict[str, Any] | None, int | None]:
    """``(architecture, transformers config fields, label count)`` of ``--arch`` with
    ``--hf-config``: ``transformers`` (or ``transformers:<its model type>``) and a local
    config.json (or the folder holding it)."""
    if hf_config is None:
        if arch == "transformers":
            raise UsageError("--arch transformers needs --hf-config (the model's config.json)")
        return arch, None, None
    if arch not in ("transformers",) and not arch.startswith("transformers:"):
        raise UsageError(f"--hf-config goes with --arch transformers, not --arch {arch!r}")
    path = _hf_config_file(hf_config)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--hf-config {hf_config!r}: no config.json there") from None
    except (OSError, ValueError, RecursionError) as err:
        raise UsageError(f"--hf-config {str(path)!r} is not a JSON config: {err}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or not model_type:
        raise UsageError(f"--hf-config {str(path)!r} names no model_type")
    if arch not in ("transformers", f"transformers:{model_type}"):
        raise UsageError(f"--arch {arch!r} but --hf-config {str(path)!r} is a {model_type!r}")
    labels = config.get("id2label")
    classes = len(labels) if isinstance(labels, dict) and labels else None
    return f"transformers:{model_type}", hf_config_fields(config), classes


def _hf_config_file(hf_config: str) -> Path:
    path = Path(hf_config)
    return path / "config.json" if path.is_dir() else path
