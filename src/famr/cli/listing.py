"""``famr methods`` and ``famr metrics``: what is registered."""

from __future__ import annotations

import argparse

from ..methods import METHODS
from ..metrics import METRICS


def cmd_methods(_: argparse.Namespace) -> int:
    width = max(len(n) for n in METHODS.names())
    for entry in METHODS:
        needs = "+".join(entry.meta["needs"])
        uses = "".join(f"(+{name})" for name in entry.meta.get("uses", ()))
        print(f"{entry.name:<{width}}  [{needs}{uses}]  {entry.summary}")
    return 0


def cmd_metrics(_: argparse.Namespace) -> int:
    width = max(len(n) for n in METHODS.names())
    for entry in METRICS:
        print(
            f"{entry.name:<{width}}  {entry.meta['direction']}; retrained model: {entry.meta['retrain']}"
        )
    return 0
