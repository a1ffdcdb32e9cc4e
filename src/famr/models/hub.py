"""Models from torchvision, timm and Hugging Face transformers, by name:
``torchvision:resnet50``, ``timm:vit_small_patch16_224``, ``transformers:vit``.

Built with random weights (pretrained weights are never downloaded: load a local file with
``famr import``), with famr's input normalisation in front, so every famr model takes images
in [0, 1]. Their state-dict keys are the library's own keys under ``net.`` (``famr import``
adds the prefix when it reads a file saved by torchvision, timm or transformers code).

A transformers model is ``AutoModelForImageClassification`` built from a configuration given
as the ``config`` argument (the fields of its ``config.json``; the model type comes from the
name), so a checkpoint's metadata rebuilds it with no download and no user-written wrapper;
its forward's ``ImageClassifierOutput`` is reduced to the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .adapt import logits_of
from .small import _normalize

SOURCES = ("torchvision", "timm", "transformers")
# configuration fields that famr sets itself, or that only describe a saved file
HF_BOOKKEEPING = (
    "model_type",
    "num_labels",
    "id2label",
    "label2id",
    "num_channels",
    "architectures",
    "transformers_version",
    "_name_or_path",
    "torch_dtype",
    "dtype",
)


class HubModel(nn.Module):
    """A torchvision, timm or transformers classifier behind famr's input normalisation."""

    external_prefix = "net."

    def __init__(self, net: nn.Module, normalize: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.net(self.normalize(x)))


def is_hub_name(name: str) -> bool:
    """Whether ``name`` names a torchvision or timm model (``source:model``)."""
    return name.partition(":")[0] in SOURCES and ":" in name


def create_hub_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> HubModel:
    """Build ``torchvision:<model>`` or ``timm:<model>`` with ``num_classes`` outputs.

    Raises:
        ValueError: The library is not installed, or does not know the model (the message
            lists some of its names).
    """
    source, _, arch = name.partition(":")
    if source == "torchvision":
        try:
            import torchvision
        except ImportError:
            raise ValueError(
                f"architecture {name!r} needs torchvision; install it (pip install torchvision)"
            ) from None
        known = torchvision.models.list_models(module=torchvision.models)
        if arch not in known:
            raise ValueError(
                f"torchvision has no classification model {arch!r}; some valid choices: "
                + ", ".join(known[:12])
                + ", ..."
            )
        if in_channels != 3:
            raise ValueError(f"torchvision models take 3 input channels, not {in_channels}")
        net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    elif source == "timm":
        try:
            import timm
        except ImportError:
            raise ValueError(
                f"architecture {name!r} needs timm; install it (pip install timm)"
            ) from None
        if not timm.is_model(arch):
            close = timm.list_models(f"*{arch.split('_')[0]}*")[:12]
            raise ValueError(f"timm has no model {arch!r}; similar names: {', '.join(close)}")
        net = timm.create_model(
            arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
        )
    elif source == "transformers":
        net = _transformers_model(arch, num_classes, in_channels, **kwargs)
    else:
        raise ValueError(f"model source {source!r} is not known; choose from {SOURCES}")
    return HubModel(net, _normalize(in_channels, mean, std))


def hf_config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a transformers ``config.json`` that describe the network: without the
    model type, the class count and labels, the channel count (famr sets those) and the
    bookkeeping of a saved file."""
    return {k: v for k, v in config.items() if k not in HF_BOOKKEEPING}


def _transformers_model(
    model_type: str,
    num_classes: int,
    in_channels: int,
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    try:
        import transformers
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as IMAGE_CLASSIFIERS,
        )
    except ImportError:
        raise ValueError(
            f"architecture 'transformers:{model_type}' needs transformers; install it "
            "(pip install 'famr[hf]')"
        ) from None
    if kwargs:
        raise ValueError(
            f"architecture 'transformers:{model_type}' takes its fields in config=..., not "
            f"{sorted(kwargs)}"
        )
    config = {} if config is None else config  # the model type's default configuration
    if not isinstance(config, dict):
        raise ValueError(
            f"config={config!r} is not valid for 'transformers:{model_type}'; give the "
            "fields of its config.json as a dict"
        )
    given = config.get("model_type", model_type)
    if given != model_type:
        raise ValueError(f"config is a {given!r} configuration, not {model_type!r}")
    fields = hf_config_fields(config)
    try:
        cfg = transformers.AutoConfig.for_model(
            model_type, num_labels=num_classes, num_channels=in_channels, **fields
        )
    except (ValueError, KeyError):
        known = sorted(IMAGE_CLASSIFIERS)
        raise ValueError(
            f"transformers has no model type {model_type!r}; image classifiers: " + ", ".join(known)
        ) from None
    try:
        return transformers.AutoModelForImageClassification.from_config(cfg)
    except ValueError:
        known = sorted(IMAGE_CLASSIFIERS)
        raise ValueError(
            f"transformers model type {model_type!r} has no image-classification model; "
            "choose from " + ", ".join(known)
        ) from None


def replace_head(model: nn.Module, num_classes: int, seed: int = 0) -> nn.Module:
    """Replace the model's classifier (its last ``nn.Linear``) by a fresh one with
    ``num_classes`` outputs, initialised like ``nn.Linear`` from ``seed``. In place."""
    from . import head_name

    name = head_name(model)
    old = model.get_submodule(name)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    setattr(parent, attr, new.to(device=old.weight.device, dtype=old.weight.dtype))
    return model
