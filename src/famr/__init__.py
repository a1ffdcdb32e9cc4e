"""famr: post-hoc machine unlearning for image classifiers.

The flat public API::

    import famr
    request = famr.ClassForget(3).split(data.train, data.test, data.num_classes)
    result = famr.unlearn(model, request, method="famr", lam=0.1)
    metrics = famr.evaluate(result.model, **request.evaluation_sets())
    attacks = famr.attack(result.model, famr.AttackData(request, validation, original=model))
"""

from .api import Result, evaluate, predict, resolve_device, train, unlearn
from .attacks import ATTACKS, AttackData, attack, list_attacks
from .config import OptimConfig, TrainConfig
from .data import (
    ClassForget,
    ConceptForget,
    ImageData,
    RandomForget,
    SampleForget,
    Splits,
    StyleForget,
    list_datasets,
    load_dataset,
)
from .loop import DivergenceError
from .methods import METHODS, list_methods
from .metrics import METRICS, list_metrics
from .metrics.gaps import gaps
from .models import create_model, list_models
from .theory import deviation_certificate

__version__ = "0.1.0"

__all__ = [
    "ATTACKS",
    "AttackData",
    "attack",
    "list_attacks",
    "METHODS",
    "METRICS",
    "ClassForget",
    "ConceptForget",
    "StyleForget",
    "RandomForget",
    "SampleForget",
    "DivergenceError",
    "ImageData",
    "OptimConfig",
    "Result",
    "Splits",
    "TrainConfig",
    "create_model",
    "deviation_certificate",
    "evaluate",
    "gaps",
    "list_datasets",
    "list_methods",
    "list_metrics",
    "list_models",
    "load_dataset",
    "predict",
    "resolve_device",
    "train",
    "unlearn",
]
