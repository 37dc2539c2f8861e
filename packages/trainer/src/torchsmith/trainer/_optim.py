"""Optimizers by name, with norms and biases exempt from weight decay, and LR schedules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchsmith.interfaces import ConfigError

from ._config import OptimConfig, ScheduleConfig

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.Embedding)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two groups: matrices decay; biases, norm weights and embeddings do not.

    Decaying a LayerNorm gain pulls it towards zero rather than one, and decaying
    a bias has no regularising effect; both only hurt (see the AdamW paper's
    setup, and nanoGPT's ``configure_optimizers``).
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) or name.endswith("bias") or param.ndim < 2:
                no_decay_ids.add(id(param))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if id(p) not in no_decay_ids]
    no_decay = [p for p in params if id(p) in no_decay_ids]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.name`` over ``model``'s trainable parameters.

    AdamW, Adam and SGD use torch's fused kernel unless ``config.fused`` is False: one
    pass over every parameter instead of a dozen tensor ops each. On the CPU it takes the
    digits MLP's AdamW step from 140 us to 49 us (see docs/trainer.md). Its results equal
    the default implementation's to rounding, not bitwise.
    """
    if config.no_decay_norms_and_biases:
        groups: list[dict[str, object]] = parameter_groups(model, config.weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    wd = config.weight_decay
    if config.name == "rmsprop":
        return torch.optim.RMSprop(
            groups, lr=config.lr, momentum=config.momentum, eps=config.eps, weight_decay=wd
        )
    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": wd}
    if config.name == "sgd":
        cls, kwargs["momentum"] = torch.optim.SGD, config.momentum
    else:
        cls = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
        kwargs.update(betas=config.betas, eps=config.eps)
    if config.fused is False:
        return cls(groups, **kwargs)
    params = [p for group in groups for p in group["params"]]  # type: ignore[attr-defined]
    odd = next((p for p in params if not _fusable(p)), None)
    if odd is None:
        try:
            return cls(groups, **kwargs, fused=True)
        except RuntimeError as exc:  # an older torch checks here: no kernel for this device
            reason = str(exc)
    else:
        reason = f"a {odd.dtype} parameter on {odd.device.type}"
    if config.fused:
        raise ConfigError(
            f"optim.fused: torch {torch.__version__} has no fused {config.name} for "
            f"{reason}; set optim.fused=false or leave it unset"
        )
    return cls(groups, **kwargs)


def _fusable(param: torch.Tensor) -> bool:
    """Whether torch's fused kernels take ``param``: real floating point, on CPU or CUDA.
    (Torch itself checks only at the first ``step()``, too late to fall back.)"""
    return param.is_floating_point() and param.device.type in ("cpu", "cuda")


def lr_factor(config: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the base LR at each step (0-based), for ``LambdaLR``."""
    warmup, floor = config.warmup_steps, config.min_lr_ratio

    def factor(step: int) -> float:
        # 1) linear warmup from 1/warmup to 1
        if step < warmup:
            return (step + 1) / warmup
        # 2) after warmup, the named decay over the remaining steps
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if config.name == "constant":
            return 1.0
        if config.name == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        if config.name == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return float(config.gamma ** ((step - warmup) // config.step_size))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state is only the step count."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
