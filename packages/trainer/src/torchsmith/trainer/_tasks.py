"""Tasks: what differs between kinds of training, as callables ``(model, batch) -> TaskOutput``.

A task computes metrics only when the model is in eval mode (or when asked
with ``train_metrics=True``), so training steps pay for the loss alone.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchsmith.interfaces import (
    ConfigError,
    DataError,
    MissingSuiteError,
    RegistryError,
    TaskOutput,
    TorchsmithError,
)

from ._losses import LossFn, clip_loss, ntxent, resolve_loss, target_weight
from ._metrics import matched_accuracy, top_k_accuracy

Augment = Callable[[torch.Tensor], torch.Tensor]
# What the loop calls a task: the interfaces' Task protocol, for a torch model.
TaskFn = Callable[[nn.Module, Any], TaskOutput]


_PAIRS = (tuple, list)


def _not_a_pair(batch: Any, task: str) -> DataError:
    """The error for a batch that is not (inputs, targets), naming the task and what came.

    Tasks check ``isinstance(batch, _PAIRS) and len(batch) == 2`` inline and call this
    only to fail: on the digits MLP's 0.5 ms step, a helper call per step measured 0.2 to
    0.6% of the step (tests/performance/test_trainer_overhead.py)."""
    got = type(batch).__name__
    if isinstance(batch, _PAIRS):
        got = f"a {got} of {len(batch)}"
    return DataError(f"{task} expects batches of (inputs, targets), got {got}")


@dataclass
class ClassificationTask:
    """Supervised classification: ``model(x)`` gives logits (B, C); targets (B,) class ids,
    or (B, C) class probabilities (mixup, label smoothing), scored by their largest.

    ``ignore_index``: the class id the loss leaves out of its mean (``F.cross_entropy``
    ignores -100 unless told otherwise). Targets of that id are then not items:
    ``num_items`` counts the others, on the device, so micro-batches and evaluation
    batches weigh in by the targets their loss is a mean over, and accuracy scores only
    those. None, the default, counts every example, as a hand-written loop's batch size
    does, without a count per step: set it when some targets are ignored.

    ``class_weight``: the loss is a class-weighted mean, as ``F.cross_entropy(weight=...)``
    takes it over class ids (divided by the targets' total weight, ``ignore_index`` left
    out: -100 when that is None), so that total is its ``loss_weight``: accumulated
    micro-batches and evaluation batches then weigh in as in one batch. Over probabilities
    torch divides by the batch's size, which ``num_items`` already is.
    """

    loss: LossFn = F.cross_entropy
    top_k: Sequence[int] = (1, 5)
    train_metrics: bool = False
    class_weight: torch.Tensor | None = None
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        if self.class_weight is not None and self.ignore_index is None:
            self.ignore_index = -100  # what a weighted F.cross_entropy leaves out by default

    def __call__(self, model: nn.Module, batch: Any) -> TaskOutput:
        if not (isinstance(batch, _PAIRS) and len(batch) == 2):
            raise _not_a_pair(batch, "classification")
        x, y = batch
        logits = model(x)
        loss = self.loss(logits, y)
        metrics: dict[str, float | torch.Tensor] = {}
        ignore = self.ignore_index
        if self.train_metrics or not model.training:
            probs = y.is_floating_point() and y.ndim == logits.ndim
            labels = y.argmax(-1) if probs else y
            ignored = None if probs else ignore
            metrics.update(top_k_accuracy(logits.detach(), labels, self.top_k, ignored))
        if ignore is None or y.is_floating_point():
            return TaskOutput(loss, y.shape[0], metrics)
        counted = (y != ignore).sum()  # a tensor: reading it would wait for a GPU
        if self.class_weight is None:
            return TaskOutput(loss, counted, metrics)
        return TaskOutput(loss, counted, metrics, self._total_weight(y))

    def _total_weight(self, y: torch.Tensor) -> torch.Tensor:
        """The class weights of the targets that count, summed on their device (no sync)."""
        weight = self.class_weight
        assert weight is not None
        if weight.device != y.device or weight.dtype != torch.float64:  # copied there once
            weight = self.class_weight = weight.to(y.device, torch.float64)
        assert self.ignore_index is not None  # set with class_weight
        return target_weight(weight, y, self.ignore_index)


@dataclass
class CausalLMTask:
    """Next-token prediction: ``model(x)`` gives logits (B, T, V); the mean is over tokens.

    Targets equal to ``ignore_index`` (padding; -100 is what ``F.cross_entropy`` ignores)
    are not counted: ``num_items`` is the number of target tokens, counted on the device, so
    accumulated micro-batches with different amounts of padding weigh in by their real
    tokens, as one batch would (the bug fixed in transformers PR #34191). A micro-batch with
    no target token has no mean loss (NaN) with ``F.cross_entropy``, which the trainer
    treats as non-finite; torchsmith-losses' cross-entropy gives 0 there instead, and a
    window with no target token at all then steps on a zero gradient, as one empty batch
    would. The default loss ignores ``ignore_index`` too; a loss of your own must ignore it
    itself.
    """

    loss: LossFn = F.cross_entropy
    train_metrics: bool = False
    ignore_index: int = -100

    def __post_init__(self) -> None:
        if self.loss is F.cross_entropy and self.ignore_index != -100:
            self.loss = functools.partial(F.cross_entropy, ignore_index=self.ignore_index)

    def __call__(self, model: nn.Module, batch: Any) -> TaskOutput:
        if not (isinstance(batch, _PAIRS) and len(batch) == 2):
            raise _not_a_pair(batch, "causal_lm")
        x, y = batch
        logits = model(x)  # (B, T, V)
        flat, targets = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss = self.loss(flat, targets)
        counted = targets != self.ignore_index
        tokens = counted.sum()  # a tensor: reading it would wait for a GPU
        metrics: dict[str, float | torch.Tensor] = {}
        if self.train_metrics or not model.training:
            scores = flat.detach()
            hits = (scores.argmax(-1) == targets) & counted
            # The token cross-entropy, whatever self.loss is (label smoothing, focal):
            # perplexity is exp of this, not of a training loss.
            nll = F.cross_entropy(scores.float(), targets, ignore_index=self.ignore_index)
            metrics = {"accuracy": hits.sum() / tokens, "nll": nll}
        return TaskOutput(loss, tokens, metrics)


def digit_views(x: torch.Tensor) -> torch.Tensor:
    """A random view of flattened 8x8 digits: small affine jitter, intensity scale and noise.

    Drawn on ``x``'s device (checkpoints save that generator too): a GPU step copies nothing
    from the host, which would wait for the GPU.
    """
    if x.ndim != 2 or x.shape[1] != 64:
        raise DataError(
            f"digit_views jitters flattened 8x8 digits, shape (B, 64), not {tuple(x.shape)}; "
            "give ContrastiveTask an augment= for your data"
        )
    b, device = x.shape[0], x.device
    images = x.view(b, 1, 8, 8)
    angle = (torch.rand(b, device=device) - 0.5) * 0.5  # about +-15 degrees
    scale = 1.0 + (torch.rand(b, device=device) - 0.5) * 0.2
    shift = (torch.rand(b, 2, device=device) - 0.5) * 0.5
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x), [b, 1, 8, 8], align_corners=False)
    warped = F.grid_sample(images, grid, align_corners=False).view(b, 64)
    gain = 0.8 + 0.4 * torch.rand(b, 1, device=device).to(x)
    return (warped * gain + 0.05 * torch.randn(b, 64, device=device).to(x)).clamp(0.0, 1.0)


@dataclass
class ContrastiveTask:
    """SimCLR: two random views of each input, pulled together against the batch's others.

    ``augment`` makes a random view of a batch of inputs; the default, :func:`digit_views`,
    fits flattened 8x8 digits only. It draws from the global torch RNG, which checkpoints
    save and restore.
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


def takes_logit_scale(loss: LossFn) -> bool:
    """Whether ``loss(image, text, logit_scale)`` is a valid call.

    A loss module is judged by its ``forward``: torchsmith-losses' ``ClipLoss`` owns
    its temperature and takes two embeddings only. Unknown signatures count as yes,
    so the call itself says what is wrong.
    """
    fn = loss.forward if isinstance(loss, nn.Module) else loss
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return (
        any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
        or sum(p.kind in positional for p in params) >= 3
    )


@dataclass
class CLIPTask:
    """Image-text contrastive learning: ``model(images, texts)`` gives (image, text[, scale]).

    ``texts`` is a tensor with one row per image (token ids (B, L), or (B,)); retrieval
    accuracy counts a caption equal to the right one as right. A scale the model returns
    (CLIP's learnable temperature) goes to the loss as its third argument, so it trains.
    A loss that takes no scale cannot learn it: that is an error, never a silently frozen
    parameter (under DDP, an unused one).
    """

    loss: LossFn = field(default=clip_loss)
    train_metrics: bool = False

    def __post_init__(self) -> None:
        self._takes_scale = takes_logit_scale(self.loss)

    def __call__(self, model: nn.Module, batch: Any) -> TaskOutput:
        if not (isinstance(batch, _PAIRS) and len(batch) == 2):
            raise _not_a_pair(batch, "clip")
        images, texts = batch
        image, text, *rest = model(images, texts)
        if not rest:
            loss = self.loss(image, text)
        elif self._takes_scale:
            loss = self.loss(image, text, rest[0])
        else:
            raise ConfigError(_scale_not_taken(self.loss))
        metrics: dict[str, float | torch.Tensor] = {}
        if self.train_metrics or not model.training:
            sim = F.normalize(image.detach(), dim=1) @ F.normalize(text.detach(), dim=1).T
            # Identical captions are equally right: score by the caption picked, not its index.
            rows = texts.reshape(texts.shape[0], -1)
            hits = (rows[sim.argmax(1)] == rows).all(dim=1).float().mean()
            metrics = {"retrieval_accuracy": hits}
        return TaskOutput(loss, images.shape[0], metrics)


def _scale_not_taken(loss: LossFn) -> str:
    name = type(loss).__name__ if isinstance(loss, nn.Module) else getattr(loss, "__name__", loss)
    return (
        f"task.loss: the model returns a logit scale but the loss {name} takes none, so the "
        "model's temperature would never train; leave task.loss unset (the built-in clip "
        "loss takes the model's scale) or use a loss that accepts (image, text, logit_scale)"
    )


def build_task(
    kind: str,
    loss: str | None,
    loss_kwargs: dict[str, Any],
    top_k: list[int],
    *,
    model_scale: bool = False,
) -> TaskFn:
    """The task ``kind`` with its loss resolved by name (default: the task's usual loss).

    ``model_scale``: the CLIP model returns its own logit scale. ``"clip"`` (the default)
    is then the built-in loss, which takes that scale; torchsmith-losses' ``clip`` holds
    its own temperature instead. Every failure to find or build the loss is a ConfigError
    naming ``task.loss`` (an unknown name) or ``task.loss_kwargs``.
    """
    default = {"classification": "cross_entropy", "causal_lm": "cross_entropy"}.get(kind)
    default = default or ("ntxent" if kind == "contrastive" else "clip")
    if kind == "clip" and model_scale and loss in (None, "clip") and not loss_kwargs:
        return CLIPTask(clip_loss)
    if kind == "clip" and model_scale and "logit_scale" in loss_kwargs:
        raise ConfigError(
            "task.loss_kwargs.logit_scale: the model returns its own logit scale (a learnable "
            "temperature), which is what the loss takes; leave logit_scale out"
        )
    try:
        fn = resolve_loss(loss or default, **loss_kwargs)
    except (TorchsmithError, TypeError, ValueError) as exc:
        unknown = isinstance(exc, (RegistryError, MissingSuiteError)) or not loss_kwargs
        raise ConfigError(f"{'task.loss' if unknown else 'task.loss_kwargs'}: {exc}") from exc
    if kind in ("classification", "causal_lm"):  # the targets the loss ignores do not count
        ignore = loss_kwargs.get("ignore_index", -100)
        if not isinstance(ignore, int) or isinstance(ignore, bool):
            raise ConfigError(f"task.loss_kwargs.ignore_index: an integer, not {ignore!r}")
    if kind == "classification":
        # A cross-entropy's class weights; another loss's `weight` may mean something else.
        weight = loss_kwargs.get("weight") if (loss or default) == "cross_entropy" else None
        if weight is None:  # count the ignored targets out only when told which they are
            configured = loss_kwargs.get("ignore_index")
            return ClassificationTask(fn, top_k, ignore_index=configured)
        class_weight = torch.as_tensor(weight, dtype=torch.float64)  # the loss took it
        return ClassificationTask(fn, top_k, class_weight=class_weight, ignore_index=ignore)
    if kind == "causal_lm":
        if loss_kwargs.get("weight") is not None:
            raise ConfigError(
                "task.loss_kwargs.weight: class weights are for classification; a causal_lm "
                "run weighs micro-batches and reports tokens/s by target tokens"
            )
        return CausalLMTask(fn, ignore_index=ignore)
    if kind == "contrastive":
        return ContrastiveTask(fn)
    if model_scale and not takes_logit_scale(fn):
        raise ConfigError(_scale_not_taken(fn))
    return CLIPTask(fn)
