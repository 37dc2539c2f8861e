"""Metric functions and a running, item-weighted mean that syncs only when read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def top_k_accuracy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int] = (1, 5),
    ignore_index: int | None = None,
) -> dict[str, torch.Tensor]:
    """``accuracy`` (top-1) and ``top{k}_accuracy`` for each k up to the number of classes
    (``targets``: class ids), over the targets that are not ``ignore_index`` (NaN when
    there are none)."""
    num_classes = logits.shape[-1]
    ks = sorted({k for k in ks if k <= num_classes} | {1})
    top = logits.topk(max(ks), dim=-1).indices  # (B, kmax)
    hits = top == targets.unsqueeze(-1)  # (B, kmax)
    kept = None if ignore_index is None else targets != ignore_index
    result = {}
    for k in ks:
        name = "accuracy" if k == 1 else f"top{k}_accuracy"
        hit = hits[:, :k].any(dim=-1)
        if kept is None:
            result[name] = hit.float().mean()
        else:  # an ignored id is never among the top k, but is no miss either
            result[name] = (hit & kept).sum() / kept.sum()
    return result


def matched_accuracy(similarity: torch.Tensor) -> torch.Tensor:
    """How often row i's most similar column is column i (retrieval of the paired item)."""
    targets = torch.arange(similarity.shape[0], device=similarity.device)
    return (similarity.argmax(dim=1) == targets).float().mean()


def perplexity(mean_token_loss: float) -> float:
    """exp of the mean per-token cross entropy (natural log); inf where that overflows a
    float, as for an infinite loss (a diverged evaluation is never the best), NaN for NaN."""
    try:
        return math.exp(mean_token_loss)
    except OverflowError:
        return math.inf


_SUM = torch.float64  # a float32 sum of 20,000 batch means drifted by 2.7e-6


class RunningMean:
    """Item-weighted means of named values; tensors stay on device until :meth:`compute`.

    Each name is averaged over the items of the batches that reported it, so a metric a
    task reports on some batches only is the mean of those, not diluted by the others.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, torch.Tensor | float] = {}  # the weight behind each name's sum
        self.items: int | torch.Tensor = 0  # items of every batch added

    def update(
        self, values: Mapping[str, float | torch.Tensor], num_items: int | torch.Tensor
    ) -> None:
        """Add ``values``, each a mean over ``num_items`` items (an int, or a count on the
        device). A batch of no items adds nothing, though its means are NaN."""
        if isinstance(num_items, int) and not num_items:
            return
        for name, value in values.items():
            self.add(name, value, num_items)
        self.items = self.items + num_items

    def add(self, name: str, value: float | torch.Tensor, weight: float | torch.Tensor) -> None:
        """Add one value, a mean over ``weight`` (items, or a weighted loss's total weight),
        without counting items: :meth:`update` counts them."""
        if isinstance(weight, (int, float)) and not weight:
            return
        if isinstance(value, torch.Tensor):  # summed in float64 (MPS has none: float32)
            on_mps = "mps" in (value.device.type, getattr(weight, "device", value.device).type)
            value = value.detach().to(torch.float32 if on_mps else _SUM)
        weighted = value * weight
        if isinstance(weighted, torch.Tensor) and isinstance(weight, torch.Tensor):
            weighted = torch.where(weight > 0, weighted, torch.zeros_like(weighted))
        self.sums[name] = self.sums.get(name, 0.0) + weighted
        self.counts[name] = self.counts.get(name, 0) + weight

    def compute(self) -> dict[str, float]:
        """The means, as floats (one host sync per value), or {} when nothing was added."""
        counts = {name: float(count) for name, count in self.counts.items()}
        return {name: float(self.sums[name]) / n for name, n in counts.items() if n}

    def reset(self) -> None:
        """Forget every value added: start a new mean (say, for the next evaluation)."""
        self.sums, self.counts, self.items = {}, {}, 0
