"""Strategies by name, as ``strategies.yaml`` and ``botmain sweep --strategy`` refer to them."""

from __future__ import annotations

from strategies.base import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    if cls.name in _REGISTRY:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def strategy_class(name: str) -> type[Strategy]:
    import strategies.builtin  # noqa: F401  (registers the built-ins)

    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def strategy_names() -> list[str]:
    import strategies.builtin  # noqa: F401

    return sorted(_REGISTRY)
