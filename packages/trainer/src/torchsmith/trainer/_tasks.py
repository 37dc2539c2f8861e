"""Tasks: what differs between kinds of training, as callables ``(model, batch) -> TaskOutput``.

A task computes metrics only when the model is in eval mode (or when asked
with ``train_metrics=True``), so training steps pay for the loss alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchsmith.interfaces import DataError, TaskOutput

from ._losses import LossFn, clip_loss, ntxent, resolve_loss
from ._metrics import matched_accuracy, top_k_accuracy

Augment = Callable[[torch.Tensor], torch.Tensor]


def _pair(batch: Any, task: str) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise _not_a_pair(batch, task)
    return batch[0], batch[1]


def _not_a_pair(batch: Any, task: str) -> DataError:
    return DataError(f"{task} expects batches of (inputs, targets), got {type(batch).__name__}")


@dataclass
class ClassificationTask:
    """Supervised classification: ``model(x)`` gives logits (B, C); targets (B,)."""

    loss: LossFn = F.cross_entropy
    top_k: Sequence[int] = (1, 5)
    train_metrics: bool = False

    def __call__(self, model: nn.Module, batch: Any) -> TaskOutput:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise _not_a_pair(batch, "classification")
        x, y = batch
        logits = model(x)
        loss = self.loss(logits, y)
        metrics: dict[str, float | torch.Tensor] = {}
        if self.train_metrics or not model.training:
            metrics.update(top_k_accuracy(logits.detach(), y, self.top_k))
        return TaskOutput(loss, y.shape[0], metrics)


@dataclass
class CausalLMTask:
    """Next-token prediction: ``model(x)`` gives logits (B, T, V); the mean is over tokens."""

    loss: LossFn = F.cross_entropy
    train_metrics: bool = False

    def __call__(self, model: nn.Module, batch: Any) -> TaskOutput:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise _not_a_pair(batch, "causal_lm")
        x, y = batch
        logits = model(x)  # (B, T, V)
        flat, targets = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss = self.loss(flat, targets)
        metrics: dict[str, float | torch.Tensor] = {}
        if self.train_metrics or not model.training:
            metrics = {"accuracy": (flat.detach().argmax(-1) == targets).float().mean()}
        return TaskOutput(loss, targets.numel(), metrics)


def digit_views(x: torch.Tensor) -> torch.Tensor:
    """A random view of flattened 8x8 digits: small affine jitter, intensity scale and noise."""
    b = x.shape[0]
    images = x.view(b, 1, 8, 8)
    angle = (torch.rand(b) - 0.5) * 0.5  # about +-15 degrees
    scale = 1.0 + (torch.rand(b) - 0.5) * 0.2
    shift = (torch.rand(b, 2) - 0.5) * 0.5
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x), [b, 1, 8, 8], align_corners=False)
    warped = F.grid_sample(images, grid, align_corners=False).view(b, 64)
    gain = 0.8 + 0.4 * torch.rand(b, 1).to(x)
    return (warped * gain + 0.05 * torch.randn(b, 64).to(x)).clamp(0.0, 1.0)


@dataclass
class ContrastiveTask:
    """SimCLR: two random views of each input, pulled together against the batch's others.

    ``augment`` draws from the global torch RNG, which checkpoints save and restore.
    """

    loss: LossFn = field(default=ntxent)
    augment: Augment = digit_views
    train_metrics: bool = False

    def __call__(self, model: nn.Module, batch: Any) -> TaskOutput:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        z1, z2 = model(self.augment(x)), model(self.augment(x))  # (B, d) each
        loss = self.loss(z1, z2)
        metrics: dict[str, float | torch.Tensor] = {}
        if self.train_metrics or not model.training:
            # Can a view find its partner among the batch's other views?
            sim = F.normalize(z1.detach(), dim=1) @ F.normalize(z2.detach(), dim=1).T
            metrics = {"pair_accuracy": matched_accuracy(sim)}
        return TaskOutput(loss, x.shape[0], metrics)


@dataclass
class CLIPTask:
    """Image-text contrastive learning: ``model(images, texts)`` gives (image, text[, scale])."""

    loss: LossFn = field(default=clip_loss)
    train_metrics: bool = False

    def __call__(self, model: nn.Module, batch: Any) -> TaskOutput:
        images, texts = _pair(batch, "clip")
        image, text, *rest = model(images, texts)
        loss = (
            self.loss(image, text, rest[0])
            if self.loss is clip_loss and rest
            else (self.loss(image, text))
        )
        metrics: dict[str, float | torch.Tensor] = {}
        if self.train_metrics or not model.training:
            sim = F.normalize(image.detach(), dim=1) @ F.normalize(text.detach(), dim=1).T
            # Identical captions are equally right: score by the caption picked, not its index.
            picked = texts[sim.argmax(1)]
            hits = (picked == texts).all(dim=1).float().mean()
            metrics = {"retrieval_accuracy": hits}
        return TaskOutput(loss, images.shape[0], metrics)


def build_task(kind: str, loss: str | None, loss_kwargs: dict[str, Any], top_k: list[int]) -> Any:
    """The task ``kind`` with its loss resolved by name (default: the task's usual loss)."""
    if kind == "classification":
        return ClassificationTask(resolve_loss(loss or "cross_entropy", **loss_kwargs), top_k)
    if kind == "causal_lm":
        return CausalLMTask(resolve_loss(loss or "cross_entropy", **loss_kwargs))
    if kind == "contrastive":
        return ContrastiveTask(resolve_loss(loss or "ntxent", **loss_kwargs))
    return CLIPTask(resolve_loss(loss or "clip", **loss_kwargs))
