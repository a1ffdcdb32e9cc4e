"""Unlearning methods: one file each, registered with ``@register_method``, auto-discovered.

A method is a plain function ``fn(model, data, cfg, *, device, progress) -> history`` that
updates ``model`` in place (``famr.unlearn`` hands it a copy) through :func:`famr.loop.optimise`,
and returns the per-epoch history.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import OptimConfig
from ..data.tensors import TensorBatches, augmentation
from ..registry import Registry

DATA_NAMES = ("forget", "retain", "holdout")
# Names that were methods once and are gone, with why and what to run instead: asking for one
# is an error that says so (famr.methods.famr_presets holds the measurements behind each).
RETIRED: dict[str, str] = {}
METHODS: Registry = Registry("method", retired=RETIRED)


def register_method(
    name: str,
    *,
    config: type[OptimConfig],
    needs: Sequence[str] = ("forget",),
    uses: Sequence[str] = (),
    resolve: Callable | None = None,
    paper: str = "",
    certificate: bool = False,
    summary: str = "",
) -> Callable:
    """Register an unlearning method.

    Args:
        name: Registry key (full words).
        config: The method's config dataclass (documented defaults).
        needs: Data the method requires: ``"forget"``, ``"retain"``, ``"holdout"``.
        uses: Data the method takes when the request holds it, without requiring it
            (``famr.unlearn`` then hands it the request's retain set).
        resolve: ``resolve(cfg, given, kind) -> cfg``: fills the config's ``auto`` fields from
            the data the request holds (``given`` ⊆ ``{"retain", "holdout", "anchor"}``) and
            its kind (:attr:`famr.Splits.kind`, ``None`` when unknown), before the run;
            ``Result.config`` is what it returns.
        paper: Citation of the method's source.
        certificate: Whether ``unlearn`` attaches the FAMR deviation certificate (methods that
            minimise the anchored FAMR objective).
        summary: One-line description for listings (default: the docstring's first line).
    """
    bad = [n for n in (*needs, *uses) if n not in DATA_NAMES]
    if bad:
        raise ValueError(f"needs/uses {bad} are not valid; choose from {DATA_NAMES}")
    return METHODS.register(
        name,
        config=config,
        needs=tuple(needs),
        uses=tuple(uses),
        resolve=resolve,
        paper=paper,
        certificate=certificate,
        **({"summary": summary} if summary else {}),
    )


def register_preset(
    name: str,
    *,
    base: str,
    values: dict[str, Any],
    needs: Sequence[str],
    uses: Sequence[str] = (),
    certificate: bool = False,
    summary: str,
    module: str,
    paper: str | None = None,
) -> type:
    """Register ``name`` as a preset of the registered method ``base``: the same function and
    resolver, with a config class whose defaults are ``values`` over ``base``'s (a field given
    explicitly still overrides them, as for any method). ``Result.method`` is ``name`` and
    ``Result.config`` holds every value that ran (for a ``famr`` preset, famr's resolved
    config).

    Args:
        name: Registry key.
        base: The registered method whose configuration space the preset is a point of.
        values: The preset's field values (each a field of ``base``'s config; checked now).
        needs: Data the preset requires: a preset that fixes a recipe needing a retain set
            says so, so a request without one fails before any work.
        uses: Data the preset takes when given without requiring it (a preset that fixes
            famr's recipe takes nothing beyond what that recipe needs).
        certificate: Whether the certificate applies (with the config's own ``certificate``).
        summary: One-line description for listings.
        module: The module that binds the returned config class under its name (so results
            holding it pickle): ``__name__`` of the caller.
        paper: Citation, where the preset has its own source (default: ``base``'s).

    Returns:
        The preset's config class, ``<Name>Preset``.
    """
    bad = [n for n in (*needs, *uses) if n not in DATA_NAMES]
    if bad:
        raise ValueError(f"needs/uses {bad} are not valid; choose from {DATA_NAMES}")
    entry = METHODS.get(base)
    parent = entry.meta["config"]
    hints = typing.get_type_hints(parent)
    metadata = {f.name: f.metadata for f in dataclasses.fields(parent)}
    own = set(metadata)
    foreign = sorted(set(values) - own)
    if foreign:
        raise ValueError(f"preset {name!r}: {foreign} are not fields of {parent.__name__}")
    words = "".join(part.capitalize() for part in name.split("_"))
    config = dataclasses.make_dataclass(
        f"{words}Preset",
        # the base field's metadata kept (how the command line's text is parsed)
        [
            (k, hints[k], dataclasses.field(default=v, metadata=metadata[k]))
            for k, v in values.items()
        ],
        bases=(parent,),
        namespace={"__module__": module},
    )
    config.__doc__ = f"``{name}``: {base!r} with " + ", ".join(
        f"{k}={v!r}" for k, v in values.items()
    )
    config()  # the preset's own values pass the base config's checks now, not at a user's run
    METHODS.add(
        name,
        entry.obj,
        **{
            **entry.meta,
            "config": config,
            "needs": tuple(needs),
            "uses": tuple(uses),
            "certificate": certificate,
            "summary": summary,
            "paper": paper or entry.meta["paper"],
            "preset_of": base,
            "preset": dict(values),
        },
    )
    return config


def buffer_rows(n: int, size: int, seed: int) -> Tensor:
    """The rows of an ``n``-example retain set that form the seeded retain buffer of at most
    ``size`` examples, in the order the buffer holds them."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]


@dataclass
class MethodData:
    """What a method sees of the request: tensors on the device and class facts.

    Attributes:
        forget: ``(images, labels)`` to forget.
        retain: ``(images, labels)`` to keep, or ``None`` when not given.
        num_classes: Number of model outputs K.
        forget_classes: The distinct labels present in the forget set.
        anchor: ``{parameter name: tensor}`` of the l2 anchor point, or ``None`` for the
            model's weights on entry (the usual case).
        holdout: ``(images, labels)`` the model never trained on, for methods that calibrate
            against unseen data (``None`` when not given).
        retain_is_buffer: ``retain`` is already the seeded retain buffer (``famr.unlearn`` drew
            it before decoding image files), so a method does not draw it again.
    """

    forget: tuple[Tensor, Tensor]
    retain: tuple[Tensor, Tensor] | None
    num_classes: int
    forget_classes: list[int]
    anchor: dict[str, Tensor] | None = None
    holdout: tuple[Tensor, Tensor] | None = None
    retain_is_buffer: bool = False

    def batches(self, name: str, cfg: OptimConfig, *, shuffle: bool = True) -> TensorBatches:
        """Batches of stream ``name`` with the config's batch size, augmentation and seed."""
        images, labels = getattr(self, name)
        # One generator per stream, seeded from cfg.seed, so runs are reproducible.
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + DATA_NAMES.index(name))
        return TensorBatches(
            images, labels, cfg.batch_size, shuffle, generator, augmentation(cfg.augment)
        )

    def retained_classes(self) -> Tensor:
        """Boolean ``(K,)`` mask of the classes absent from the forget set."""
        mask = torch.ones(self.num_classes, dtype=torch.bool)
        mask[self.forget_classes] = False
        return mask


def optimise_anchored(
    model, objective, streams, cfg, data: MethodData, *, device, progress, parts=()
):
    """:func:`famr.loop.optimise` with the request's l2 anchor (:class:`famr.parts.L2Anchor`):
    strength ``cfg.lam``, point ``data.anchor`` (the model's weights on entry unless the caller
    gave another); then any other ``parts``."""
    from ..loop import optimise
    from ..parts import L2Anchor

    anchor = L2Anchor(cfg.lam, data.anchor)
    return optimise(
        model, objective, streams, cfg, device=device, parts=[anchor, *parts], progress=progress
    )


def takes_retain(entry) -> bool:
    """The method reads a retain set: it needs one, or uses one when the request holds it."""
    return "retain" in entry.meta["needs"] or "retain" in entry.meta.get("uses", ())


def list_methods() -> list[str]:
    """Registered method names."""
    return METHODS.names()


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_discover()
