"""Losses by name: torchsmith-losses when installed, built-in torch versions otherwise.

The built-ins follow the papers directly: NT-Xent from SimCLR (Chen et al. 2020,
eq. 1) and the symmetric InfoNCE of CLIP (Radford et al. 2021, fig. 3).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torchsmith.interfaces import ConfigError, MissingSuiteError

LossFn = Callable[..., torch.Tensor]


def ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2B anchors; (z1[i], z2[i]) are positives."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, d)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim.fill_diagonal_(float("-inf"))  # an anchor is not its own negative
    b = z1.shape[0]
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, targets)


def clip_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float = 1 / 0.07
) -> torch.Tensor:
    """Mean of image->text and text->image cross entropy over the in-batch similarity matrix."""
    logits = logit_scale * F.normalize(image, dim=1) @ F.normalize(text, dim=1).T  # (B, B)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


BUILTIN: dict[str, LossFn] = {
    "cross_entropy": F.cross_entropy,
    "ntxent": ntxent,
    "clip": clip_loss,
}


def resolve_loss(name: str | LossFn, **kwargs: Any) -> LossFn:
    """A loss callable: ``name`` itself when callable, else torchsmith-losses' ``get_loss``.

    Without torchsmith-losses, the built-in names still work; any other name
    fails with the install line.
    """
    if callable(name):
        return name
    try:
        from torchsmith.losses import get_loss
    except ImportError:
        return _builtin(name, kwargs)
    loss: LossFn = get_loss(name, **kwargs)
    return loss


def _builtin(name: str, kwargs: dict[str, Any]) -> LossFn:
    if name not in BUILTIN:
        raise MissingSuiteError(
            f"loss {name!r} needs torchsmith-losses (built in here: {', '.join(BUILTIN)}): "
            'pip install "torchsmith-trainer[losses]"'
        )
    builtin = BUILTIN[name]
    if not kwargs:
        return builtin
    try:  # a misspelt keyword fails now, not at the first step
        inspect.signature(builtin).bind_partial(None, None, **kwargs)
    except TypeError as exc:
        accepted = list(inspect.signature(builtin).parameters)[2:]
        raise ConfigError(
            f"loss {name!r}: {exc}; accepted keywords: {', '.join(accepted)}"
        ) from None
    if name == "cross_entropy" and kwargs.get("weight") is not None:
        return _weighted_cross_entropy(kwargs)
    return lambda *args: builtin(*args, **kwargs)


def target_weight(weight: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The total class weight of ``targets`` (class ids), ``ignore_index`` left out: what a
    class-weighted cross-entropy's mean divides by. Summed on the device, with no sync."""
    kept = targets != ignore_index
    return torch.where(kept, weight[torch.where(kept, targets, 0)], 0.0).sum()


def _weighted_cross_entropy(kwargs: dict[str, Any]) -> LossFn:
    """``F.cross_entropy`` with class weights from a config's list, put where the logits
    are. Over class ids, a batch whose targets all weigh 0 gives 0 rather than torch's 0/0,
    as torchsmith-losses' does: as one micro-batch of several it has no weight, not a NaN."""
    weight, rest = kwargs["weight"], {k: v for k, v in kwargs.items() if k != "weight"}
    try:
        tensor = torch.as_tensor(weight, dtype=torch.float64)  # cast to the logits when used
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    numbers = isinstance(weight, (list, tuple)) and not any(isinstance(w, bool) for w in weight)
    if (
        tensor is None
        or not numbers
        or tensor.ndim != 1
        or not len(tensor)
        or not torch.isfinite(tensor).all()
        or (tensor < 0).any()
    ):
        raise ConfigError(
            f"loss 'cross_entropy': weight must be a list of one finite, non-negative number "
            f"per class, got {weight!r}"
        )
    placed = {tensor.device: tensor}  # by device, so that it is copied to a GPU once
    ignore = rest.get("ignore_index", -100)

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        here = placed.get(logits.device)
        if here is None:
            here = placed[logits.device] = tensor.to(logits.device)
        w = here.to(logits.dtype)
        if targets.is_floating_point() or "reduction" in rest:  # probabilities: over examples
            return F.cross_entropy(logits, targets, weight=w, **rest)
        total = F.cross_entropy(logits, targets, weight=w, reduction="sum", **rest)
        denominator = target_weight(w, targets, ignore)
        return total / torch.where(denominator > 0, denominator, 1.0)

    return loss
