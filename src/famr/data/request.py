"""A request in words, as the command line and audit records give it: which data (and how it
is relabelled, stylised or split), and what to forget.

``build_data`` turns a data request (the dict an audit record stores) into the data set; the
``spec_from_*`` functions turn a request's words (``"3,5"``, ``"random:0.1"``, an index file, a
concept's name, a recorded spec) into a forget spec. Everything here raises ``ValueError`` (or
``FileNotFoundError``) with a one-line message naming the bad value; the command line prints
it and exits 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import ForgetSpec, hold_out_validation, load_dataset
from .concepts import (
    CIFAR10_COARSE,
    DIGITS_COARSE,
    ConceptForget,
    StyleForget,
    add_style,
    coarsen,
)
from .forget import ClassForget, RandomForget, SampleForget, forget_spec_from_dict

GROUPINGS = {"cifar10": CIFAR10_COARSE, "digits": DIGITS_COARSE}
STYLES = ("sketch",)


def parse_style(text: str) -> tuple[str, float]:
    """``"sketch:0.2"`` -> ``("sketch", 0.2)``."""
    kind, _, fraction = text.partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = float("nan")
    if kind not in STYLES or not 0 < value < 1:
        raise ValueError(
            f"--style {text!r} is not valid; give STYLE:FRACTION with STYLE in {', '.join(STYLES)} "
            "and 0 < FRACTION < 1, e.g. sketch:0.2"
        )
    return kind, value


def build_data(request: dict[str, Any], workers: int | None = None):
    """``(data, derived)`` for a data request (``data``, ``data_root``, ``classes_file``,
    ``image_size``, ``data_path``, ``validation``, ``coarse``, ``style``, ``style_seed``): the
    data set with its validation split held out, its coarse relabelling and its style applied;
    ``derived`` holds the fine labels / style masks that concept and style requests need."""
    options = {
        "classes_file": request.get("classes_file"),
        "image_size": request.get("image_size"),
        "workers": workers,
        "data_path": request.get("data_path"),
    }
    data = load_dataset(request["data"], request.get("data_root"), **options)
    validation = request.get("validation")
    if validation:
        if request.get("coarse") or request.get("style"):
            raise ValueError(
                "a validation split (famr train --validation) cannot be combined with --coarse "
                "or --style yet"
            )
        data = hold_out_validation(data, validation["fraction"], seed=validation["seed"])
    derived: dict[str, Any] = {}
    if request.get("coarse"):
        if request["coarse"] not in GROUPINGS:
            raise ValueError(
                f"--coarse {request['coarse']!r} is not known; choose from {', '.join(GROUPINGS)}"
            )
        derived["coarse"] = coarsen(data, GROUPINGS[request["coarse"]])
        data = derived["coarse"].data
    if request.get("style"):
        _, fraction = parse_style(request["style"])
        derived["styled"] = add_style(data, fraction, seed=request.get("style_seed") or 0)
        data = derived["styled"].data
    return data, derived


def parse_classes(text: str) -> list[int]:
    """``"3,5"`` -> ``[3, 5]``: ASCII digits only (``int()`` would also take "٣", an
    Arabic-Indic three, as 3); an empty text is no class."""
    if not text.strip():
        return []  # the request itself then says there is no class to forget
    parts = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"[0-9]{1,9}", part, re.ASCII) for part in parts):
        raise ValueError(
            f"classes {text!r} are not valid; give integers separated by commas, e.g. 3 or 3,5"
        )
    return [int(part) for part in parts]


def read_indices(path: str | Path) -> list[int]:
    """Training-set indices from a file: integers separated by spaces, commas or new lines, or
    a JSON list of integers. Never a float, a bool, a JSON string or another script's digits."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"--indices file {str(path)!r} not found (or give random:FRACTION, e.g. random:0.1)"
        )
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(
            f"--indices file {str(path)!r} is not a readable text file: {err}"
        ) from None
    from_json = text.lstrip().startswith("[")
    if from_json:
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise ValueError(
                f"--indices file {str(path)!r} is not a valid JSON list: {detail}"
            ) from None
        if not isinstance(values, list):
            raise ValueError(f"--indices file {str(path)!r} must hold a JSON list of integers")
    else:
        values = text.replace(",", " ").split()
    out = []
    for value in values:
        if from_json:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = re.fullmatch(r"[+-]?[0-9]+", value, re.ASCII) is not None
        if not ok:
            raise ValueError(
                f"--indices file {str(path)!r} holds {value!r}, which is not an integer index"
            )
        out.append(int(value))
    return out


def spec_from_words(
    derived: dict[str, Any],
    *,
    classes: str | None = None,
    indices: str | None = None,
    concept: str | None = None,
    forget_style: bool = False,
    forget_seed: int = 0,
) -> ForgetSpec:
    """The forget spec a request names: ``classes`` ("3,5"), ``indices`` (an index file or
    "random:FRACTION", seeded by ``forget_seed``), ``concept`` (a fine class's name or id inside
    the coarse labels of ``derived``) or ``forget_style`` (the stylised images of ``derived``)."""
    if classes is not None:
        return ClassForget(parse_classes(classes))
    if concept is not None:
        coarse = derived.get("coarse")
        if coarse is None:
            raise ValueError("--concept needs --coarse GROUPING (the coarse labels it lives in)")
        names = coarse.fine_names
        if concept.isdigit() and int(concept) < len(names):
            index = int(concept)
        elif concept in names:
            index = names.index(concept)
        else:
            raise ValueError(
                f"--concept {concept!r} is not a fine class; choose from {', '.join(names)}"
            )
        return ConceptForget(index, coarse.fine_train, coarse.fine_test, names[index])
    if forget_style:
        styled = derived.get("styled")
        if styled is None:
            raise ValueError("--forget-style needs --style STYLE:FRACTION (the stylised data)")
        return StyleForget(styled.styled_train, styled.styled_test)
    if indices is None:
        raise ValueError("no request: give classes, indices, a concept or a style")
    if indices.startswith("random:"):
        try:
            fraction = float(indices.split(":", 1)[1])
        except ValueError:
            raise ValueError(
                f"--indices {indices!r} is not valid; give random:FRACTION with 0 < FRACTION < 1"
            ) from None
        spec = RandomForget(fraction, forget_seed)
        spec.validate()
        return spec
    return SampleForget(read_indices(indices))


def spec_from_record(forget: dict[str, Any], derived: dict[str, Any]) -> ForgetSpec:
    """A recorded spec (``spec.to_dict()``), rebuilt against the (relabelled / stylised) data."""
    try:
        return _spec_from_record(forget, derived)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"forget spec {forget!r} is malformed: {err!r}") from None


def _spec_from_record(forget: dict[str, Any], derived: dict[str, Any]) -> ForgetSpec:
    if forget.get("kind") == "concept":
        coarse = derived.get("coarse")
        if coarse is None:
            raise ValueError("a concept request needs the coarse relabelling (--coarse)")
        return ConceptForget(
            int(forget["concept"]), coarse.fine_train, coarse.fine_test, forget.get("name", "")
        )
    if forget.get("kind") == "style":
        styled = derived.get("styled")
        if styled is None:
            raise ValueError("a style request needs the stylised data (--style)")
        return StyleForget(styled.styled_train, styled.styled_test)
    return forget_spec_from_dict(forget)
