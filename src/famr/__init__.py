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
