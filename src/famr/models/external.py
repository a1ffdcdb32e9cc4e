"""Loading weights saved by other code bases: key mapping without unpickling arbitrary objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save`` file read with ``weights_only=True``.

    A ``torch.save`` file that holds a dict with a ``state_dict`` / ``model`` / ``net`` entry
    (a common training-checkpoint layout) is unwrapped. Nothing but tensors and plain containers
    is ever loaded: a pickle carrying code is refused.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not a readable weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"weights file {str(path)!r} is not a readable safetensors file: {err}"
            ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for hostile or broken files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"weights file {str(path)!r} was refused (only tensors are loaded): {first}"
        ) from None
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"weights file {str(path)!r} does not hold a mapping of names to tensors")
    return dict(obj)


def map_keys(
    state: Mapping[str, Tensor], *, strip_prefix: str = "", renames: Sequence[tuple[str, str]] = ()
) -> dict[str, Tensor]:
    """Strip ``strip_prefix`` (e.g. DataParallel's ``module.``) and apply prefix ``renames``.

    Each ``(old, new)`` in ``renames`` replaces a key's leading ``old`` with ``new``; the first
    match wins.
    """
    out = {}
    for key, value in state.items():
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix) :]
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def load_external(
    model: nn.Module,
    path: str | Path,
    *,
    strip_prefix: str = "",
    renames: Sequence[tuple[str, str]] = (),
    state: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """Load another code base's weights into ``model`` (strictly: every key must match).

    Input normalisation is part of famr's models (``mean``/``std`` architecture arguments), so
    a checkpoint trained on normalised inputs needs the same ``mean``/``std`` when the model is
    built; buffers ``normalize.mean``/``normalize.std`` absent from the file are kept.
    torchvision / timm models (:class:`famr.models.hub.HubModel`) take the file's keys under
    their ``net.`` prefix. ``state`` gives the already-read tensors of ``path``.

    Raises:
        ValueError: Keys or shapes do not match (the message lists a few of each), or a
            tensor holds NaN/inf (famr would refuse the checkpoint it made from them).
    """
    raw = read_state_dict(path) if state is None else state
    state = map_keys(raw, strip_prefix=strip_prefix, renames=renames)
    prefix = getattr(model, "external_prefix", "")
    if prefix and not any(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    own = model.state_dict()
    for key in ("normalize.mean", "normalize.std"):
        if key in own and key not in state:
            state[key] = own[key]
    state = {
        k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"weights {str(path)!r} do not match the architecture: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, wrong shape {bad_shape[:4]}; "
            "use strip_prefix / renames to map the keys"
        )
    kinds = [
        k
        for k in set(own) & set(state)
        if own[k].is_floating_point() != state[k].is_floating_point()
    ]
    if kinds:  # integer weights loaded into a float model would be silently truncated copies
        raise ValueError(
            f"weights {str(path)!r} hold {state[kinds[0]].dtype} values for {kinds[0]!r}, where "
            f"the architecture has {own[kinds[0]].dtype}: not weights of this model"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise ValueError(
            f"weights {str(path)!r} hold non-finite (NaN/inf) values in {len(bad)} tensor(s), "
            f"first {bad[0]!r}; refusing to import them"
        )
    model.load_state_dict(state, strict=True)
    return model


def read_transformers_state_dict(config: str | Path, weights: str | Path) -> dict[str, Tensor]:
    """The weights of a Hugging Face transformers image classifier, as its model holds them.

    transformers renames keys between the files it writes and the modules it builds (version
    5 stores older names and converts them when loading), so the file is read by
    transformers' own loader — locally, from ``config`` (its config.json) and ``weights``,
    never downloaded — and must fill every parameter.

    Raises:
        ValueError: transformers is missing, or the file does not fill the model (the message
            lists a few missing, unexpected or mis-shaped keys).
    """
    import tempfile

    try:
        from transformers import AutoModelForImageClassification
    except ImportError:
        raise ValueError(
            "importing a transformers model needs transformers: pip install 'famr[hf]'"
        ) from None
    weights = Path(weights)
    # transformers reads a folder: one that holds the two files under the names it expects
    name = "model.safetensors" if weights.suffix == ".safetensors" else "pytorch_model.bin"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").symlink_to(Path(config).resolve())
        (folder / name).symlink_to(weights.resolve())
        try:
            net, info = AutoModelForImageClassification.from_pretrained(
                folder, local_files_only=True, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"transformers cannot read {str(weights)!r}: {first}") from None
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(
        str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or []
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"weights {str(weights)!r} do not fill the transformers model: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, wrong shape {mismatched[:4]}"
        )
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
