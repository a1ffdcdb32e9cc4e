"""``famr``: one FAMR for every request, its configuration resolved from what the request gives.

A flat config whose fields default to ``None`` ("auto") and whose ``recipe`` names the set of
defaults they take. ``recipe="auto"`` resolves from the request before the run
(:func:`resolve_famr`; ``famr.unlearn`` calls it and returns the resolved config in
``Result.config``, so the audit record and the report show what ran):

- a retain set given (a class, samples, a concept, a style; a sequential step) →
  ``"last_stage"`` (:class:`famr.methods.famr_retain.FamrLastStageConfig`): the body's last
  stage and the head re-initialised, then distilled from the original's predictions without
  the removed classes on the forget set and a retain buffer (on a request that removes no
  class, the buffer alone). Forgetting in the weights: the linear probe and the relearning
  attack find what they find on a retrained model far more nearly than with a head edit
  (BENCHMARKS.md, "Forgetting in the weights").
- no retain set → ``"head"`` (:class:`famr.methods.famr.FamrHeadConfig`): FAMR's
  uniform-prediction loss over the retained classes on the classifier head, l2-anchored, with
  its deviation certificate: the paper's setting (forget set and model only). It changes the
  head only, so the features keep what they knew (the probe finds it); a request that removes
  no whole class is refused with what to give instead.

A field set explicitly overrides the recipe's default; a field that the resolved recipe does
not have (``beta`` on the ``head`` recipe) is an error naming the recipe. (A field the recipe
has but its mode does not read, ``target`` under the last_stage recipe's distilled targets, is
recorded as given and has no effect, as in ``famr_retain``.)
``famr_literal`` (the paper's whole-network form) and ``famr_retain`` (the output-space anchor
on every parameter) stay registered as their own methods.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .. import distributed
from ..loop import _has_batchnorm  # the loop's own test for the same refusal
from . import MethodData, register_method
from .famr import PAPER, FamrHeadConfig, run_famr
from .famr_retain import FamrLastStageConfig, famr_retain

RECIPES: dict[str, type] = {"head": FamrHeadConfig, "last_stage": FamrLastStageConfig}
RECIPE_CHOICES = ("auto", *RECIPES)


def recipe_for(given: set[str]) -> str:
    """The recipe ``recipe="auto"`` resolves to, given the data a request holds (``"retain"``,
    ``"holdout"``, ``"anchor"``): a retain set selects ``last_stage``, else ``head``."""
    return "last_stage" if "retain" in given else "head"


def _auto_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    # every field of the largest recipe, typed Optional, default None ("the recipe's value")
    hints = typing.get_type_hints(FamrLastStageConfig)
    return [
        (f.name, typing.Optional[hints[f.name]], dataclasses.field(default=None))  # noqa: UP045
        for f in dataclasses.fields(FamrLastStageConfig)
    ]


def _set_values(cfg: Any) -> dict[str, Any]:
    return {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name != "recipe" and getattr(cfg, f.name) is not None
    }


def _check(self) -> None:
    if self.recipe not in RECIPE_CHOICES:
        raise ValueError(
            f"recipe={self.recipe!r} is not valid; choose one of: {', '.join(RECIPE_CHOICES)}"
        )
    # bad values fail now, before any data is read: the largest recipe validates every field
    # (a value valid there but foreign to the recipe chosen later fails at resolution)
    FamrLastStageConfig(**_set_values(self))
    if self.recipe != "auto":
        _concrete(self, self.recipe)


FamrConfig = dataclasses.make_dataclass(
    "FamrConfig",
    [("recipe", str, dataclasses.field(default="auto")), *_auto_fields()],
    namespace={"__post_init__": _check, "__module__": __name__},
)
FamrConfig.__doc__ = """The one ``famr``'s config: ``recipe`` (``"auto"``, ``"head"`` or
    ``"last_stage"``) and every field of the recipes' configs, ``None`` meaning "the
    recipe's value" (see :mod:`famr.methods.famr_auto` for what ``auto`` resolves to, and
    :class:`famr.methods.famr.FamrHeadConfig` / :class:`famr.methods.famr_retain.FamrLastStageConfig`
    for each field's meaning and default)."""


def _concrete(cfg: Any, recipe: str):
    """The recipe's own config with ``cfg``'s explicit values (validated there)."""
    cls = RECIPES[recipe]
    own = {f.name for f in dataclasses.fields(cls)}
    values = _set_values(cfg)
    foreign = sorted(set(values) - own)
    if foreign:
        why = (
            ""
            if cfg.recipe == recipe
            else (
                ", which this request resolved to ("
                + ("a retain set given" if recipe == "last_stage" else "no retain set given")
                + ")"
            )
        )
        raise ValueError(
            f"{', '.join(f'{k}={values[k]!r}' for k in foreign)}: not a field of famr's "
            f"{recipe!r} recipe{why}; its fields: {', '.join(sorted(own))}"
        )
    return cls(**values)


def resolve_famr(cfg: Any, given: set[str]) -> Any:
    """``cfg`` with its recipe resolved (``auto`` → :func:`recipe_for`) and every field of that
    recipe filled in (fields the recipe does not have stay ``None``)."""
    recipe = recipe_for(given) if cfg.recipe == "auto" else cfg.recipe
    concrete = dataclasses.asdict(_concrete(cfg, recipe))
    return FamrConfig(recipe=recipe, **concrete)


def run(model, data: MethodData, cfg: Any, *, device, progress=None):
    """Run the resolved recipe (``famr.unlearn`` resolves ``auto`` before calling)."""
    if cfg.recipe == "auto":  # called directly, not through famr.unlearn
        cfg = resolve_famr(cfg, {"retain"} if data.retain is not None else set())
    concrete = _concrete(cfg, cfg.recipe)
    if cfg.recipe == "head":
        return run_famr(model, data, concrete, device=device, progress=progress)
    if data.retain is None:
        raise ValueError(
            "famr's 'last_stage' recipe distills the re-initialised stage on a retain buffer: "
            "pass retain=... (or the request object, which holds it), or recipe='head'"
        )
    if distributed.world()[1] > 1 and _has_batchnorm(model):
        raise ValueError(
            "famr's 'last_stage' recipe trains the re-initialised stage's BatchNorm statistics, "
            "which a data-parallel run cannot share across ranks: run it in one process, or "
            "pass recipe='head' (--set recipe=head)"
        )
    return famr_retain(model, data, concrete, device=device, progress=progress)


register_method(
    "famr",
    config=FamrConfig,
    uses=("retain",),
    resolve=resolve_famr,
    paper=PAPER,
    certificate=True,
    summary="FAMR for every request: with a retain set, the last stage + head re-initialised "
    "and distilled (forgets in the weights); without, the head only, l2-anchored",
)(run)
