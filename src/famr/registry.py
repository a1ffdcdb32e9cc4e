"""One small registry class, used for methods, metrics, models and data sets.

Adding an entry is one decorated function in one file; the package imports every module of
``famr.methods`` / ``famr.metrics`` so entries register themselves (timm's ``register_model``
pattern).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its metadata.

    Attributes:
        name: The registry key (full words, snake_case).
        obj: The registered function or class.
        meta: Free-form metadata (config class, required data, direction, ...).
        summary: First line of the object's docstring, for listings.
    """

    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (getattr(self.obj, "__doc__", None) or "").strip()
        return self.meta.get("summary") or (doc.splitlines()[0] if doc else "")


class Registry(Generic[T]):
    """A name -> entry mapping with a decorator, a lookup that names valid choices, and a lister.

    Args:
        kind: What the registry holds ("method", "metric", ...), used in error messages.
        retired: ``{name: why and what instead}`` for names that were registered once: asking
            for one raises with that text instead of "unknown".
    """

    def __init__(self, kind: str, retired: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.retired = retired if retired is not None else {}
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with metadata ``meta``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, **meta: Any) -> None:
        """Register ``obj`` under ``name``; a name can be registered once only."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, obj, dict(meta))

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if isinstance(name, str) and name in self.retired:
                raise ValueError(
                    f"{self.kind} {name!r} was removed: {self.retired[name]}"
                ) from None
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
