"""The last stage of a network, and re-initialising it.

A class forgotten only at the classifier is still in the features: a linear probe or a few
steps of fine-tuning bring it back. Re-initialising the last stage of the body with the head,
and training them again on retained data, removes what that stage knew about the forget set
while the lower stages, which carry generic features, keep the original's weights.
"""

from __future__ import annotations

import re

from torch import nn

from . import head_name

STAGE_SHARE = 0.25  # the last stage holds at least this share of the body's parameters
CONTAINER_SHARE = 0.9  # a child holding this share is a container of stages (ViT blocks)


def _size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _suffix(children: list[tuple[str, nn.Module]], total: int) -> list[tuple[str, nn.Module]]:
    """The shortest run of trailing children holding at least STAGE_SHARE of ``total``."""
    taken, held = [], 0
    for name, child in reversed(children):
        taken.insert(0, (name, child))
        held += _size(child)
        if held >= STAGE_SHARE * total:
            break
    return taken


def last_stage(model: nn.Module) -> list[str]:
    """Module names of the body's last stage, in model order (the head is not among them).

    The rule: among the model's parameterised children other than the classifier, the
    shortest trailing run holding at least a quarter of the body's parameters; where that run
    starts in a container holding nine tenths of the body (a ViT's ``blocks``), the trailing
    run of the container's children holding a quarter of it instead. A CIFAR ResNet-20 gives
    ``layer3``, a torchvision ResNet ``layer4``, a timm ViT-Tiny its last 3 of 12 blocks.

    Raises:
        ValueError: The model has no parameterised module besides its classifier.
    """
    head = head_name(model)
    prefix, node = "", model
    while True:
        children = [
            (prefix + name, child)
            for name, child in node.named_children()
            if _size(child) > 0
            and prefix + name != head
            and not head.startswith(prefix + name + ".")
        ]
        body = sum(_size(c) for _, c in children)
        if not children or body == 0:
            raise ValueError(
                f"the model has no parameterised stage besides its classifier {head!r} to "
                "re-initialise"
            )
        run = _suffix(children, body)
        first_name, first = run[0]
        inner = [c for c in first.children() if _size(c) > 0]
        if len(run) > 1 and _size(first) >= CONTAINER_SHARE * body and len(inner) > 1:
            # the run starts in a container of stages: take its own last quarter instead
            rest = [name for name, _ in run[1:]]
            return _container_suffix(first_name, first) + rest
        if len(run) == 1 and _size(first) >= CONTAINER_SHARE * body and len(inner) > 1:
            prefix, node = first_name + ".", first
            continue
        return [name for name, _ in run]


def _container_suffix(name: str, container: nn.Module) -> list[str]:
    children = [(f"{name}.{n}", c) for n, c in container.named_children() if _size(c) > 0]
    return [n for n, _ in _suffix(children, _size(container))]


def stage_pattern(model: nn.Module, spec: str) -> str:
    """The parameter-name regular expression of a ``reset`` spec: ``"last_stage"`` is the body's
    last stage (:func:`last_stage`) and the classifier; anything else is taken as it is."""
    if spec != "last_stage":
        return spec
    names = [*last_stage(model), head_name(model)]
    return "^(" + "|".join(re.escape(n) for n in names) + r")\."


def reinitialise(model: nn.Module, names: list[str]) -> list[str]:
    """Re-initialise every module that owns one of the parameters ``names`` (its own
    ``reset_parameters``, and the running statistics of a BatchNorm layer); returns the
    modules' names. Uses the global RNG: seed it first for a reproducible draw.

    Raises:
        ValueError: A module owning one of the parameters cannot be re-initialised.
    """
    owners = sorted({n.rpartition(".")[0] for n in names})
    modules = dict(model.named_modules())
    for owner in owners:
        module = modules[owner]
        if not hasattr(module, "reset_parameters"):
            raise ValueError(
                f"module {owner!r} ({type(module).__name__}) has no reset_parameters(), so it "
                "cannot be re-initialised; choose another reset"
            )
        module.reset_parameters()  # BatchNorm's also resets its running statistics
    return owners
