"""Classification losses: cross-entropy and focal loss (Lin et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from torchsmith.interfaces import ConfigError, DataError

from ._base import LossModule, compute_dtype
from ._checks import warn_caller
from ._registry import register_loss

__all__ = ["CrossEntropyLoss", "FocalLoss"]


def _class_weights(name: str, weights: Sequence[float] | None) -> torch.Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(list(weights), dtype=torch.float64)  # cast to the logits at use
    if w.dim() != 1 or w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any():
        raise ConfigError(f"{name} must be a non-empty list of finite numbers >= 0, got {weights}")
    return w


def _check_logits_targets(logits: object, targets: object) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, C, *) float; targets (N, *) integer class indices."""
    if not isinstance(logits, torch.Tensor) or logits.dim() < 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise DataError(
            f"logits must be a floating tensor of shape (batch, classes, ...), got {shape}"
        )
    if logits.numel() == 0:  # as the embedding losses say; torch gives NaN, or 0 with a warning
        raise DataError(f"logits is empty: shape {tuple(logits.shape)}")
    if not isinstance(targets, torch.Tensor):
        raise DataError(f"targets must be a torch.Tensor, got {type(targets)}")
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.is_complex():
        raise DataError(
            f"targets must hold integer class indices (torch.long), got dtype {targets.dtype}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(targets.shape) != expected:
        raise DataError(
            f"targets must have shape {expected} for logits of shape {tuple(logits.shape)}, "
            f"got shape {tuple(targets.shape)}"
        )
    return logits, targets.long()


def _check_weights(weight: torch.Tensor | None, classes: int) -> None:
    if weight is not None and weight.numel() != classes:
        raise DataError(f"weight has {weight.numel()} entries but logits have {classes} classes")


@register_loss("cross_entropy")
class CrossEntropyLoss(LossModule):
    """Cross-entropy over class indices or class probabilities, with label smoothing, class
    weights and ignore_index.

    ``loss(logits (N, C, ...), targets (N, ...) long)``. With ``weight``, the mean is
    weighted by the targets' class weights (as ``torch.nn.functional.cross_entropy``).
    A batch whose targets are all ``ignore_index`` gives 0 instead of NaN (with a
    RuntimeWarning on the CPU; on an accelerator the check would cost a host sync per step).
    Floating targets of the logits' shape are class probabilities (mixup, distillation):
    the mean is then over examples, as torch takes it, and ``ignore_index`` does not apply.
    Components: ``accuracy`` over non-ignored targets (for probabilities: their largest).
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        weight: Sequence[float] | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", _class_weights("weight", weight), persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(targets, torch.Tensor) and targets.is_floating_point():
            return self._over_probabilities(logits, targets)
        logits, targets = _check_logits_targets(logits, targets)
        _check_weights(self.weight, logits.shape[1])
        logits = logits.to(compute_dtype(logits))
        kept = targets != self.ignore_index
        _warn_if_all_ignored("cross_entropy", kept)
        weight = None if self.weight is None else self.weight.to(logits)
        # The mean as F.cross_entropy takes it (sum / total weight of the kept targets), with
        # the all-ignored batch giving 0 rather than 0/0, decided on the device, not the host.
        with _class_ids_in_range("cross_entropy", logits.shape[1]):
            total = F.cross_entropy(
                logits,
                targets,
                weight=weight,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                reduction="sum",
            )
        if weight is None:
            denominator = kept.sum().to(total.dtype)
        else:
            denominator = torch.where(kept, weight[torch.where(kept, targets, 0)], 0.0).sum()
        loss = total / torch.where(denominator > 0, denominator, 1.0)
        correct = (logits.detach().argmax(1) == targets) & kept
        return self._record(loss, accuracy=correct.sum() / kept.sum().clamp_min(1))

    def _over_probabilities(self, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Targets that are class probabilities of the logits' shape, as torch takes them."""
        if not (isinstance(logits, torch.Tensor) and logits.dim() >= 2):
            _check_logits_targets(logits, probs)  # raises, naming the logits
        if probs.shape != logits.shape:
            raise DataError(
                f"floating targets are class probabilities and must have the logits' shape "
                f"{tuple(logits.shape)}, got shape {tuple(probs.shape)} (class indices: "
                "an integer tensor)"
            )
        logits, _ = _check_logits_targets(logits, probs.argmax(1))
        _check_weights(self.weight, logits.shape[1])
        logits = logits.to(compute_dtype(logits))
        weight = None if self.weight is None else self.weight.to(logits)
        loss = F.cross_entropy(
            logits, probs.to(logits.dtype), weight=weight, label_smoothing=self.label_smoothing
        )
        correct = logits.detach().argmax(1) == probs.argmax(1)
        return self._record(loss, accuracy=correct.float().mean())


@contextmanager
def _class_ids_in_range(name: str, classes: int) -> Iterator[None]:
    """torch's error for a class id out of range (raised on the CPU; CUDA asserts on the
    device instead) as a DataError naming the targets. Nothing is checked beforehand: that
    would cost every call a pass over the targets."""
    try:
        yield
    except (IndexError, RuntimeError) as exc:
        if "out of bounds" not in str(exc):
            raise
        raise DataError(
            f"{name}: targets hold a class id outside 0..{classes - 1} for logits of "
            f"{classes} classes ({exc})"
        ) from exc


def _warn_if_all_ignored(name: str, kept: torch.Tensor) -> None:
    """Warn when no target is kept, on the CPU only: elsewhere asking would sync the device."""
    if kept.device.type == "cpu" and not kept.any():
        warn_caller(f"{name}: every target equals ignore_index; loss is 0")


@register_loss("focal")
class FocalLoss(LossModule):
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (gamma 2).

    Two forms, chosen by the targets:
    - class indices (N,) long with logits (N, C): softmax focal loss; ``alpha`` is None or
      one weight per class; mean over non-ignored samples.
    - float targets in [0, 1] of the logits' shape: sigmoid (binary / multi-label) focal
      loss as RetinaNet; ``alpha`` is None or the positives' weight in [0, 1]; mean over
      elements.
    With gamma 0 and no alpha this is plain cross-entropy (softmax) or BCE (sigmoid).
    """

    class_alpha: torch.Tensor | None

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        if isinstance(alpha, int | float) and not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1] for the sigmoid form, got {alpha}")
        self.alpha = alpha
        # Per-class alpha, validated once and moved with the module (not rebuilt per call).
        per_class = None if alpha is None or isinstance(alpha, int | float) else alpha
        self.register_buffer("class_alpha", _class_weights("alpha", per_class), persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(targets, torch.Tensor) and targets.is_floating_point():
            return self._sigmoid(logits, targets)
        logits, targets = _check_logits_targets(logits, targets)
        if logits.dim() != 2:
            raise DataError(
                f"focal expects logits of shape (batch, classes), got {tuple(logits.shape)}"
            )
        logits = logits.to(compute_dtype(logits))
        kept = targets != self.ignore_index
        safe = torch.where(kept, targets, 0)
        with _class_ids_in_range("focal", logits.shape[1]):
            log_p = F.log_softmax(logits, dim=1).gather(1, safe[:, None]).squeeze(1)  # log p_t
        # clamp away from 0: d/dx x^gamma is infinite there for gamma < 1
        tiny = torch.finfo(log_p.dtype).tiny
        loss = -((1.0 - log_p.exp()).clamp_min(tiny) ** self.gamma) * log_p
        if self.alpha is not None:
            if isinstance(self.alpha, int | float):
                raise ConfigError("alpha for class-index targets must be one weight per class")
            weight = self.class_alpha
            assert weight is not None
            _check_weights(weight, logits.shape[1])
            loss = loss * weight.to(logits)[safe]
        count = kept.sum()
        _warn_if_all_ignored("focal", kept)
        return self._record(torch.where(kept, loss, 0.0).sum() / count.clamp_min(1))

    def _sigmoid(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.shape != targets.shape:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise DataError(
                f"float targets (sigmoid focal loss) must match logits' shape: logits {shape}, "
                f"targets {tuple(targets.shape)}"
            )
        if logits.numel() == 0:
            raise DataError(f"logits is empty: shape {tuple(logits.shape)}")
        dtype = compute_dtype(logits, targets)
        x, t = logits.to(dtype), targets.to(dtype)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p = torch.sigmoid(x)
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * (1 - p_t).clamp_min(torch.finfo(dtype).tiny) ** self.gamma
        if self.alpha is not None:
            if not isinstance(self.alpha, int | float):
                raise ConfigError("alpha for float (sigmoid) targets must be a single number")
            loss = loss * (self.alpha * t + (1 - self.alpha) * (1 - t))
        return self._record(loss.mean())
