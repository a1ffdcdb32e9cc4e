"""``famr``: one FAMR for every request, its configuration resolved from what the request gives.

A flat config whose fields default to ``None`` ("auto") and whose ``recipe`` names the set of
defaults they take. ``recipe="auto"`` resolves from the request before the run
(:func:`resolve_famr`; ``famr.unlearn`` calls it and returns the resolved config in
``Result.config``, so the audit record and the report show what ran):

- a retain set and held-out data given, on a request that removes examples rather than
  classes, concepts or styles (``kind`` ``"samples"`` or ``"random"``: a random share, chosen
  images) → ``"quantile"`` (:class:`famr.methods.famr_quantile.FamrQuantileRecipeConfig`):
  every parameter moved toward per-example targets, the held-out confidence at each forgotten
  image's rank, with the retain-buffer KL anchor, until the forget set is recognised as often
  as the held-out data. A model retrained without a random share still recognises most of
  it; pushing those images to the uniform prediction, or re-initialising a stage, costs the
  whole network (CIFAR-10 random 10 %: avg gap 2.28 under ``last_stage``, 0.85 here).
- any other request with a retain set (a class, a concept, a style; a sequential step; a
  sample request without held-out data) → ``"last_stage"``
  (:class:`famr.methods.famr_retain.FamrLastStageConfig`): the body's last stage but its first
  block and the head re-initialised, then trained again on retained images only, distilled
  from the original's predictions without the removed classes on a retain buffer (the forget
  set is not read). Forgetting in the weights: the linear probe and the relearning
  attack find what they find on a retrained model far more nearly than with a head edit
  (BENCHMARKS.md, "Forgetting in the weights"). A sample request lands here only for want of
  held-out data, and says so (a :class:`FamrRecipeWarning` naming ``holdout=``).
- no retain set → ``"head"`` (:class:`famr.methods.famr.FamrHeadConfig`): FAMR's
  uniform-prediction loss over the retained classes on the classifier head, l2-anchored, with
  its deviation certificate: the paper's setting (forget set and model only). It changes the
  head only, so the features keep what they knew (the probe finds it); a request that removes
  no whole class is refused with what to give instead.

The request's kind comes from ``famr.unlearn(..., kind=...)``, else the request object
(:attr:`famr.Splits.kind`), else ``forget_classes`` when plain data sets are given (``[]``:
samples; classes listed: classes; not given: classes, which ``famr.unlearn`` then checks
against the labels). Per-example targets are for samples only: a concept or a style is not a
share of the distribution the held-out data stands for.

A field set explicitly overrides the recipe's default; a field that the resolved recipe does
not have (``beta`` on the ``head`` recipe) is an error naming the recipe. (A field the recipe
has but its mode does not read, ``target`` under the last_stage recipe's unread forget set, is
recorded as given and has no effect, as in ``famr_retain``.)
``famr_literal`` (the paper's whole-network form) stays its own method, and ``famr_newton``
(the theory's one damped Newton step, solved by conjugate gradients: another solver, not a
setting). The other variants are presets of this config (``famr_retain``, ``famr_quantile``)
or of ``famr_literal`` (``uniform_kl``), or retired: :mod:`famr.methods.famr_presets`.
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from typing import Any

from .. import distributed
from ..loop import _has_batchnorm  # the loop's own test for the same refusal
from . import MethodData, register_method
from .famr import PAPER, FamrHeadConfig, run_famr
from .famr_quantile import FamrQuantileRecipeConfig, famr_quantile
from .famr_retain import FamrLastStageConfig, famr_retain, pull_can_act

RECIPES: dict[str, type] = {
    "head": FamrHeadConfig,
    "last_stage": FamrLastStageConfig,
    "quantile": FamrQuantileRecipeConfig,
}
RECIPE_CHOICES = ("auto", *RECIPES)
# the request kinds whose forget set is examples of retained classes (Splits.kind)
SAMPLE_KINDS = ("samples", "random")
# each request kind (famr.data.forget.REQUEST_KINDS) as a message says it
KIND_WORDS = {"classes": "class", "samples": "sample", "random": "random-share"}


class FamrRecipeWarning(UserWarning):
    """``famr``'s ``auto`` recipe resolved to a weaker recipe for want of some data."""


def recipe_for(given: set[str], kind: str | None = None) -> str:
    """The recipe ``recipe="auto"`` resolves to, given the data a request holds (``"retain"``,
    ``"holdout"``, ``"anchor"``) and its kind (:attr:`famr.Splits.kind`; ``None`` unknown):
    without a retain set ``head``; a sample request with held-out data ``quantile``; else
    ``last_stage``."""
    if "retain" not in given:
        return "head"
    if kind in SAMPLE_KINDS and "holdout" in given:
        return "quantile"
    return "last_stage"


def _why(recipe: str, kind: str | None) -> str:
    """Why ``auto`` chose ``recipe``, for error messages."""
    return {
        "head": "no retain set given",
        "quantile": "a sample request with a retain set and held-out data",
        "last_stage": (
            f"a {KIND_WORDS.get(kind, kind)} request with a retain set"
            if kind
            else "a retain set given"
        )
        + (" and no held-out data" if kind in SAMPLE_KINDS else ""),
    }[recipe]


def _auto_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    # every field of every recipe, typed Optional, default None ("the recipe's value"); the
    # command line's text of a field that is a string in its recipe is parsed as a string
    # (famr.config.make_config), so "none" stays the string where it is one of the field's
    # choices (forget_target=none), and is None ("the recipe's value") elsewhere
    fields: dict[str, Any] = {}
    for cls in RECIPES.values():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, hints[f.name])
    return [
        (
            name,
            typing.Optional[kind],  # noqa: UP045
            dataclasses.field(default=None, metadata={"parse_as": str} if kind is str else {}),
        )
        for name, kind in fields.items()
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
    if self.recipe != "auto":
        _concrete(self, self.recipe)
        return
    # bad values fail now, before any data is read: each value must be one that some recipe
    # with that field takes (with the other set values that recipe has, over its defaults:
    # forget_features needs forget_target="distilled" beside it); a value foreign to the
    # recipe chosen later fails at resolution
    values = _set_values(self)
    refusals = {}  # each recipe built once with the set values it has: its error, or None
    for cls in RECIPES.values():
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            cls(**{k: v for k, v in values.items() if k in fields})
            refusals[cls] = None
        except ValueError as err:
            refusals[cls] = err
    for name in values:
        having = [c for c in RECIPES.values() if name in {f.name for f in dataclasses.fields(c)}]
        if all(refusals[c] is not None for c in having):
            raise refusals[having[0]]


FamrConfig = dataclasses.make_dataclass(
    "FamrConfig",
    [("recipe", str, dataclasses.field(default="auto")), *_auto_fields()],
    namespace={"__post_init__": _check, "__module__": __name__},
)
FamrConfig.__doc__ = """The one ``famr``'s config: ``recipe`` (``"auto"``, ``"head"``,
    ``"last_stage"`` or ``"quantile"``) and every field of the recipes' configs, ``None`` meaning "the
    recipe's value" (see :mod:`famr.methods.famr_auto` for what ``auto`` resolves to, and
    :class:`famr.methods.famr.FamrHeadConfig` / :class:`famr.methods.famr_retain.FamrLastStageConfig`
    / :class:`famr.methods.famr_quantile.FamrQuantileRecipeConfig` for each field's meaning and
    default)."""


def _concrete(cfg: Any, recipe: str, kind: str | None = None):
    """The recipe's own config with ``cfg``'s explicit values (validated there)."""
    cls = RECIPES[recipe]
    own = {f.name for f in dataclasses.fields(cls)}
    values = _set_values(cfg)
    foreign = sorted(set(values) - own)
    if foreign:
        why = (
            ""
            if cfg.recipe == recipe
            else f", which this request resolved to ({_why(recipe, kind)})"
        )
        raise ValueError(
            f"{', '.join(f'{k}={values[k]!r}' for k in foreign)}: not a field of famr's "
            f"{recipe!r} recipe{why}; its fields: {', '.join(sorted(own))}"
        )
    if recipe == "last_stage" and "forget_features" not in values:
        # the feature pull shapes the distilled forget term's features: where that term is
        # not read (a request that removes no class) or was set otherwise by the caller, the
        # pull resolves to 0, so the resolved config says what runs (a no-op while the
        # recipe's own default is 0, as since 2026-12-07's three-rate study)
        default = FamrLastStageConfig
        reset = values.get("reset", default.reset)
        if not pull_can_act(reset, values.get("forget_target", default.forget_target), kind):
            values["forget_features"] = 0.0
    return cls(**values)


def resolve_famr(cfg: Any, given: set[str], kind: str | None = None) -> Any:
    """``cfg`` with its recipe resolved (``auto`` → :func:`recipe_for`) and every field of that
    recipe filled in (fields the recipe does not have stay ``None``). A sample request that
    resolves to ``last_stage`` for want of held-out data warns (:class:`FamrRecipeWarning`)."""
    recipe = recipe_for(given, kind) if cfg.recipe == "auto" else cfg.recipe
    if cfg.recipe == "auto" and recipe == "last_stage" and kind in SAMPLE_KINDS:
        warnings.warn(
            f"famr: a {KIND_WORDS.get(kind, kind)} request without held-out data runs the last_stage "
            "recipe, which "
            "re-initialises a stage from the retain buffer alone and may not forget the samples "
            "(digits random 10 %: still recognised 100 %, as by the original) or cost accuracy "
            "on every class (CIFAR-10 random 10 %, earlier defaults: test accuracy 83.3 % "
            "against the retrained model's 86.0 %); pass holdout= (a "
            "validation split the model never trained on; CLI: --holdout validation) for the "
            "quantile recipe's per-example targets",
            FamrRecipeWarning,
            stacklevel=3,
        )
    concrete = dataclasses.asdict(_concrete(cfg, recipe, kind))
    return FamrConfig(recipe=recipe, **concrete)


def run(model, data: MethodData, cfg: Any, *, device, progress=None):
    """Run the resolved recipe (``famr.unlearn`` resolves ``auto`` before calling)."""
    if cfg.recipe == "auto":  # called directly, not through famr.unlearn
        held = {"retain": data.retain, "holdout": data.holdout}
        given = {name for name, value in held.items() if value is not None}
        cfg = resolve_famr(cfg, given, "samples" if data.forget_classes == [] else "classes")
    concrete = _concrete(cfg, cfg.recipe)
    if cfg.recipe == "head":
        return run_famr(model, data, concrete, device=device, progress=progress)
    if cfg.recipe == "quantile":
        if data.retain is None or data.holdout is None:
            raise ValueError(
                "famr's 'quantile' recipe moves each forgotten image to the held-out confidence "
                "of its rank and anchors the rest on a retain buffer: pass retain=... and "
                "holdout=... (CLI: --holdout validation), or recipe='last_stage'"
            )
        return famr_quantile(model, data, concrete, device=device, progress=progress)
    if data.retain is None:
        raise ValueError(
            "famr's 'last_stage' recipe distills the re-initialised stage on a retain buffer: "
            "pass retain=... (or the request object, which holds it), or recipe='head'"
        )
    if distributed.world()[1] > 1 and _has_batchnorm(model) and concrete.batchnorm != "eval":
        raise ValueError(
            "famr's 'last_stage' recipe trains the re-initialised stage's BatchNorm statistics, "
            "which a data-parallel run cannot share across ranks: run it in one process, keep "
            "BatchNorm in eval mode (batchnorm='eval'), or pass recipe='head' (--set "
            "recipe=head)"
        )
    return famr_retain(model, data, concrete, device=device, progress=progress)


register_method(
    "famr",
    config=FamrConfig,
    uses=("retain", "holdout"),
    resolve=resolve_famr,
    paper=PAPER,
    certificate=True,
    summary="FAMR for every request: with a retain set, the last stage + head re-initialised "
    "and distilled on retained images (forgets in the weights), or for samples with held-out data per-example "
    "targets on every parameter; without, the head only, l2-anchored",
)(run)
