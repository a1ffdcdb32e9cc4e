"""famr: post-hoc machine unlearning for image classifiers.

The public API is what a user calls::

    import famr
    data = famr.load_dataset("digits")
    request = famr.ClassForget(3).split(data.train, data.test, data.num_classes)
    result = famr.unlearn(model, request, method="famr", lam=0.1)
    metrics = famr.evaluate(result.model, **request.evaluation_sets())
    attacks = famr.attack(result.model, famr.AttackData(request, validation, original=model))

Registries, configs and the lower layers are in their modules (``famr.methods.METHODS``,
``famr.config.OptimConfig``, ``famr.theory``, ...).
"""

from ._version import __version__ as __version__
from .api import Result, evaluate, predict, train, unlearn
from .attacks import AttackData, attack, list_attacks, register_attack
from .data import (
    ClassForget,
    ConceptForget,
    RandomForget,
    SampleForget,
    Splits,
    StyleForget,
    list_datasets,
    load_dataset,
)
from .loop import DivergenceError
from .methods import list_methods, register_method
from .metrics import list_metrics, register_metric
from .models import create_model, list_models

__all__ = [
    "AttackData",
    "ClassForget",
    "ConceptForget",
    "DivergenceError",
    "RandomForget",
    "Result",
    "SampleForget",
    "Splits",
    "StyleForget",
    "attack",
    "create_model",
    "evaluate",
    "list_attacks",
    "list_datasets",
    "list_methods",
    "list_metrics",
    "list_models",
    "load_dataset",
    "predict",
    "register_attack",
    "register_method",
    "register_metric",
    "train",
    "unlearn",
]

# Names the top-level API used to export: still reachable, with a warning naming where they live.
_MOVED = {
    "METHODS": ("famr.methods", "METHODS"),
    "METRICS": ("famr.metrics", "METRICS"),
    "ATTACKS": ("famr.attacks", "ATTACKS"),
    "OptimConfig": ("famr.config", "OptimConfig"),
    "TrainConfig": ("famr.config", "TrainConfig"),
    "ImageData": ("famr.data", "ImageData"),
    "gaps": ("famr.metrics.gaps", "gaps"),
    "resolve_device": ("famr.api", "resolve_device"),
    "deviation_certificate": ("famr.theory", "deviation_certificate"),
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        module, attr = _MOVED[name]
        warnings.warn(
            f"famr.{name} moved to {module}.{attr}; the top-level name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'famr' has no attribute {name!r}")
