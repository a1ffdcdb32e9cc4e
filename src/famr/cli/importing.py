"""``famr import``: another code base's weights as a famr checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from .. import io
from ..models import create_model
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
    arch_args: dict[str, Any] = {"num_classes": args.num_classes, "in_channels": args.in_channels}
    for name in ("mean", "std"):
        values = _floats(getattr(args, name), name)
        if values is not None:
            arch_args[name] = values
    from ..models import head_name
    from ..models.external import map_keys, read_state_dict
    from ..models.hub import replace_head

    model = create_model(args.arch, **arch_args)
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
        model = create_model(args.arch, **{**arch_args, "num_classes": source_classes})
        replaced = {"from_classes": source_classes, "seed": args.seed}
    load_external(model, args.weights, strip_prefix=args.strip_prefix, renames=renames, state=state)
    if replaced is not None:
        replace_head(model, args.num_classes, seed=args.seed)
    meta = {
        "arch": args.arch,
        "arch_args": arch_args,
        "imported_from": str(args.weights),
        "key_mapping": {"strip_prefix": args.strip_prefix, "renames": renames},
        "replaced_head": replaced,
    }
    with plan:
        io.save_checkpoint(out, model, meta, stage=plan)
        plan.commit()
    print(f"imported {args.weights} as {args.arch}; saved {out}")
    return 0
