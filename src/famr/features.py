"""The features a model computes on the way to its prediction, read with a hook.

The head-only fast path (``methods.head``), the certificate's exact logit bound (``theory``)
and the linear-probe attack (``attacks``) all need the input of one layer, usually the
classifier: this module sits below all three, so none of them imports another's internals.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import distributed
from .data.tensors import to_float


@torch.no_grad()
def head_inputs(
    model: nn.Module, head: nn.Module, images: Tensor, batch_size: int = 512, *, bf16: bool = False
) -> Tensor:
    """The inputs the model feeds its ``head`` for ``images`` (eval mode, returned as float32).

    With ``bf16`` the body runs under bfloat16 autocast (as the full-forward path does with
    ``bf16=True``), about four times faster on a CPU with bf16 support.
    """
    captured: list[Tensor] = []
    hook = head.register_forward_pre_hook(
        lambda _, inputs: captured.append(inputs[0].detach().float())
    )
    was_training = model.training
    model.eval()

    def features(part: Tensor) -> Tensor:
        captured.clear()
        for start in range(0, len(part), batch_size):
            x = part[start : start + batch_size]
            with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16, enabled=bf16):
                model(to_float(x))
        return torch.cat(captured)

    try:
        # under torchrun each rank computes its share; every rank gets all the features
        return distributed.gather_rows(features, images)
    finally:
        hook.remove()
        model.train(was_training)


def layer_inputs(
    model: nn.Module, layer: str | None, images: Tensor, batch_size: int = 512
) -> Tensor:
    """The input of the submodule named ``layer`` (default: the classifier, the model's last
    ``nn.Linear``) for each image, flattened to ``(N, D)`` float32.

    Raises:
        ValueError: The model has no submodule of that name (the message lists a few).
    """
    from .models import head_name

    name = head_name(model) if layer is None else layer
    try:
        module = model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"layer={layer!r} is not a submodule; some names: {names}") from None
    return head_inputs(model, module, images, batch_size).flatten(1)
