"""The one flat registry of losses: name -> class (or builder function)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from torchsmith.interfaces import ConfigError, RegistryError

__all__ = ["get_loss", "list_losses", "register_loss"]

LossFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=LossFactory)

_REGISTRY: dict[str, LossFactory] = {}


def register_loss(name: str) -> Callable[[F], F]:
    """Class decorator adding a loss under ``name``; a taken name raises RegistryError."""
    if not isinstance(name, str) or not name:
        raise RegistryError(f"a loss name must be a non-empty string, got {name!r}")

    def decorate(factory: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise RegistryError(
                f"loss name {name!r} is already registered to {_REGISTRY[name]!r}; "
                "pick another name"
            )
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_losses() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_REGISTRY)


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` with ``kwargs``.

    Unknown names raise RegistryError listing close matches; keyword arguments the
    loss does not take raise ConfigError listing the ones it does.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise RegistryError(
            f"unknown loss {name!r}.{hint} Registered losses: {', '.join(list_losses())}"
        ) from None
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:
        accepted = ", ".join(
            p.name
            for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        raise ConfigError(f"get_loss({name!r}): {error}; accepted: {accepted}") from None
    return factory(**kwargs)
