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
# a child holding this share of its level is a container of stages, entered rather than taken
# whole: a ViT's blocks (0.99 of the body), timm EfficientNet-B0's (0.90), ConvNeXt's stages
# (0.97); a ResNet's last stage holds less (CIFAR ResNet-20 layer3 0.77, ResNet-18 layer4 0.75)
CONTAINER_SHARE = 0.85
BUT_FIRST = "last_stage_but_first"  # the params spec of :func:`last_stage_but_first`


def _size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _children(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    return [(prefix + name, c) for name, c in module.named_children() if _size(c) > 0]


def _trailing(children: list[tuple[str, nn.Module]], need: float) -> list[str]:
    """The shortest run of trailing ``children`` holding ``need`` parameters, entering a
    container of stages where the run would start in one."""
    level = sum(_size(c) for _, c in children)
    taken: list[str] = []
    held = 0
    for name, child in reversed(children):
        size = _size(child)
        if held + size >= need:
            inner = _children(child, name + ".")
            if size >= CONTAINER_SHARE * level and len(inner) > 1:
                return _trailing(inner, need - held) + taken
            return [name, *taken]
        taken.insert(0, name)
        held += size
    return taken


def _wrapped(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(name, child)`` when ``model`` is a wrapper whose one child holds the whole model
    (famr's adapter around a Hugging Face model), else ``None``."""
    kids = _children(model, "")
    if len(kids) == 1 and head_name(model).startswith(kids[0][0] + "."):
        return kids[0]
    return None


def last_stage(model: nn.Module, share: float = STAGE_SHARE) -> list[str]:
    """Module names of the body's last stage, in model order (the classifier is not among them).

    The rule: the parameterised modules that share the classifier's container (VGG's and
    MobileNet's hidden classifier layers, a ConvNeXt head's norm), and, when they hold less
    than a quarter of the body's parameters, the shortest trailing run of the model's other
    top-level children that makes up the quarter; a child holding 85 % of its level (a ViT's
    ``blocks``) is entered rather than taken whole. A CIFAR ResNet-20 gives ``layer3``, a
    torchvision ResNet ``layer4``, a timm ViT-Tiny its last 4 of 12 blocks and its norm, a VGG
    its two hidden classifier layers. ``share`` replaces the quarter: at 0.9 a ResNet-20 gives
    ``layer2`` and ``layer3``, a ViT-Tiny all 12 blocks and its norm (11 hold 0.89). "Trailing" is registration order: for a model that
    registers modules out of execution order (GoogLeNet's auxiliary heads), give ``params``
    as a regular expression instead. A wrapper whose one child holds the whole model is
    entered first.

    Raises:
        ValueError: The model has no parameterised module besides its classifier.
    """
    head = head_name(model)
    wrapper = _wrapped(model)
    if wrapper is not None:
        name, child = wrapper
        return [f"{name}.{inner}" for inner in last_stage(child, share)]
    parent = head.rpartition(".")[0]
    beside = []
    if parent:  # the classifier sits in a container: its other layers are the last stage's
        container = model.get_submodule(parent)
        beside = [n for n, _ in _children(container, parent + ".") if n != head]
    top = [
        (name, c)
        for name, c in _children(model, "")
        if name != head and not head.startswith(name + ".")
    ]
    beside_size = sum(_size(model.get_submodule(n)) for n in beside)
    body = sum(_size(c) for _, c in top) + beside_size
    if body == 0:
        raise ValueError(
            f"the model has no parameterised stage besides its classifier {head!r} to re-initialise"
        )
    if beside_size >= share * body or not top:
        return beside
    return _trailing(top, share * body - beside_size) + beside


def _blocks_in(model: nn.Module, name: str) -> list[str]:
    """The blocks of the one module ``name``: its parameterised children, entering a wrapper
    whose one child holds it all or a child holding ``CONTAINER_SHARE`` of it (timm ConvNeXt's
    ``stages.3.blocks`` beside its small downsampling layer)."""
    module = model.get_submodule(name)
    while True:
        inner = _children(module, name + ".")
        size = _size(module)
        inside = [
            (n, c)
            for n, c in inner
            if len(_children(c, n + ".")) > 1
            and (len(inner) == 1 or _size(c) >= CONTAINER_SHARE * size)
        ]
        if len(inner) == 1 or inside:
            name, module = (inside or inner)[0]
            continue
        return [n for n, _ in inner] or [name]


def _stage_blocks(model: nn.Module) -> tuple[list[str], list[str], list[str]]:
    """(the last stage's modules in the body, the blocks among them, the layers beside the
    classifier) of :func:`last_stage`, a single stage module entered for its blocks; a wrapper
    whose one child holds the whole model is entered first, as :func:`last_stage` enters it."""
    wrapper = _wrapped(model)
    if wrapper is not None:
        name, child = wrapper
        return tuple([f"{name}.{n}" for n in part] for part in _stage_blocks(child))
    stage = last_stage(model)
    parent = head_name(model).rpartition(".")[0]
    beside = [n for n in stage if parent and n.startswith(parent + ".")]
    body = [n for n in stage if n not in beside]
    if len(body) == 1:
        body = _blocks_in(model, body[0])
    blocks = [n for n in body if _children(model.get_submodule(n), n + ".")]
    return body, blocks, beside


def last_blocks(model: nn.Module, count: int, spec: str | None = None) -> list[str]:
    """Module names of the last ``count`` blocks of the body's last stage (:func:`last_stage`)
    and of the layers that follow them: a ResNet stage's residual blocks (``layer3.1``,
    ``layer3.2`` of a CIFAR ResNet-20 for 2), a ViT's last transformer blocks. Single layers
    after the last block (a ViT's final norm, EfficientNet's ``conv_head`` and ``bn2``) and the
    layers beside the classifier (a ConvNeXt head's norm) go with it and are not counted.
    Re-initialising fewer blocks than the whole stage keeps what the first ones learned,
    retained images memorised included, which a stage trained again from a small buffer does
    not recover.

    Raises:
        ValueError: The last stage has fewer than ``count`` blocks, or no blocks at all (its
            modules are single layers, as in famr's ``small_cnn``): the message lists them.
    """
    spec = spec or f"last_blocks:{count}"
    body, blocks, beside = _stage_blocks(model)
    if not blocks:
        raise ValueError(
            f"params={spec!r} is not valid for this model: its last stage has no blocks, only "
            f"single layers ({', '.join(body or beside)}); use 'last_stage' or a name pattern"
        )
    if count > len(blocks):
        raise ValueError(
            f"params={spec!r} is not valid for this model: its last stage has {len(blocks)} "
            f"block{'s' if len(blocks) > 1 else ''} ({', '.join(blocks)}); use last_blocks:1 "
            f"to last_blocks:{len(blocks)}"
        )
    return body[body.index(blocks[-count]) :] + beside


def last_stage_but_first(model: nn.Module) -> list[str]:
    """The last stage (:func:`last_stage`) without its first block: ``last_blocks`` of all its
    blocks but one (CIFAR ResNet-20: ``layer3.1``, ``layer3.2``; torchvision ResNet-18:
    ``layer4.1``; timm ViT-Tiny: ``blocks.9`` to ``blocks.11`` and ``norm``). A last stage of fewer
    than two blocks (one block, or single layers as in famr's ``small_cnn``) has no first block
    to keep: it is taken whole, as ``last_stage`` takes it. The first block keeps what the
    original learned, retained images memorised included (famr's default re-initialisation:
    BENCHMARKS.md, "FAMR study"). Blocks are the model's own modules, so the cut follows its
    module tree: on a ViT the stage is :func:`last_stage`'s trailing quarter of the blocks, not a
    stage of the architecture; a torchvision DenseNet's stage (its last dense block and final
    norm) holds no block at its level and is taken whole."""
    body, blocks, beside = _stage_blocks(model)
    if len(blocks) < 2:
        return last_stage(model)
    return body[body.index(blocks[1]) :] + beside  # last_blocks of all but the first


def block_count(spec: str) -> int | None:
    """The count of a ``"last_blocks:N"`` spec (``None``: another spec).

    Raises:
        ValueError: N is not an integer >= 1 written in ASCII digits without leading zeros.
    """
    if not spec.startswith("last_blocks:"):
        return None
    text = spec.partition(":")[2]
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise ValueError(
            f"params={spec!r} is not valid: the count after 'last_blocks:' must be an integer "
            f">= 1 (the last stage's trailing blocks to take), got {text!r}"
        )
    return int(text)


def stage_share(spec: str) -> float | None:
    """The body share of a ``"last_stage"`` / ``"last_stage:SHARE"`` spec (``None``: another
    spec).

    Raises:
        ValueError: SHARE is not a number in (0, 1].
    """
    if spec == "last_stage":
        return STAGE_SHARE
    if not spec.startswith("last_stage:"):
        return None
    text = spec.partition(":")[2]
    try:
        share = float(text)
    except ValueError:
        share = float("nan")
    if not 0 < share <= 1:  # NaN fails too
        raise ValueError(
            f"params={spec!r} is not valid: the share after 'last_stage:' must be a number in "
            f"(0, 1] (the part of the body's parameters to take), got {text!r}"
        )
    return share


def stage_pattern(model: nn.Module, spec: str) -> str:
    """The parameter-name regular expression of a ``params`` spec: ``"last_stage"`` is the body's
    last stage (:func:`last_stage`) and the classifier, ``"last_stage:SHARE"`` the trailing
    modules holding that share of the body's parameters and the classifier,
    ``"last_blocks:N"`` the last stage's last N blocks (:func:`last_blocks`) and the classifier,
    ``"last_stage_but_first"`` the last stage without its first block
    (:func:`last_stage_but_first`) and the classifier; anything else is taken as it is."""
    count = block_count(spec)
    share = stage_share(spec)
    if spec == BUT_FIRST:
        names = [*last_stage_but_first(model), head_name(model)]
    elif count is not None:
        names = [*last_blocks(model, count, spec), head_name(model)]
    elif share is None:
        return spec
    else:
        names = [*last_stage(model, share), head_name(model)]
    return "^(" + "|".join(re.escape(n) for n in names) + r")\."


def reinitialise(model: nn.Module, names: list[str]) -> list[str]:
    """Re-initialise every module that owns one of the parameters ``names`` with PyTorch's
    default initialisation of its type (``reset_parameters``; BatchNorm's also resets its
    running statistics), not with a library's own scheme (timm's truncated normal, say);
    returns the modules' names. Uses the global RNG: seed it first for a reproducible draw.

    Raises:
        ValueError: A module owning one of the parameters cannot be re-initialised, or also
            owns a frozen parameter (``requires_grad=False``), which must not move.
    """
    owners = sorted({n.rpartition(".")[0] for n in names})
    modules = dict(model.named_modules())
    for owner in owners:
        module = modules[owner]
        frozen = [n for n, p in module.named_parameters(recurse=False) if not p.requires_grad]
        if frozen:
            raise ValueError(
                f"module {owner!r} also holds frozen parameters {frozen}: re-initialising it "
                "would move them; unfreeze them or choose params without this module"
            )
        # nn.MultiheadAttention names its own _reset_parameters
        reset = getattr(module, "reset_parameters", None) or getattr(
            module, "_reset_parameters", None
        )
        if reset is None:
            raise ValueError(
                f"module {owner!r} ({type(module).__name__}) has no reset_parameters(), so it "
                "cannot be re-initialised; choose params without it"
            )
        reset()
    return owners
