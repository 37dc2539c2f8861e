"""Image-text losses: CLIP's symmetric InfoNCE, SigLIP's pairwise sigmoid, N-modal InfoNCE.

CLIP: Radford et al. 2021. SigLIP: Zhai et al. 2023. With ``gather_distributed=True``
each rank scores its own rows against every rank's columns (open_clip's "local loss
with gather-with-grad"), which under DDP equals one process on the whole batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import _distributed as dist
from ._base import LogitScale, LossModule, compute_dtype, normalize
from ._blockwise import logsumexp_blocks, sigmoid_pair_loss_blocks
from ._checks import check_chunk_size, check_embeddings, check_pair
from ._registry import register_loss

__all__ = ["ClipLoss", "CrossModalLoss", "SigLipLoss"]


def _prepare(x: torch.Tensor, dtype: torch.dtype, unit: bool) -> torch.Tensor:
    x = x.to(dtype)
    return normalize(x) if unit else x


def info_nce_pair(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    *,
    chunk_size: int | None,
    gather_distributed: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean InfoNCE a->b and b->a, where a_i's positive is b_i (both (n, d), prepared)."""
    n = a.shape[0]
    if gather_distributed and dist.world_size() > 1:
        # Local rows against every rank's columns; the positive b_i is among them.
        all_a, all_b = dist.gather(a), dist.gather(b)
        pos = (a * b).sum(-1) * scale
        rows_ab, _ = logsumexp_blocks(a, all_b, scale, chunk_size=chunk_size)
        rows_ba, _ = logsumexp_blocks(b, all_a, scale, chunk_size=chunk_size)
        return (rows_ab - pos).mean(), (rows_ba - pos).mean()
    if chunk_size is None or chunk_size >= n:
        logits = (a @ b.T) * scale  # (n, n)
        labels = torch.arange(n, device=a.device)
        return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)
    pos = (a * b).sum(-1) * scale
    rows, cols = logsumexp_blocks(a, b, scale, chunk_size=chunk_size, need_cols=True)
    assert cols is not None
    return (rows - pos).mean(), (cols - pos).mean()


@register_loss("clip")
class ClipLoss(LossModule):
    """Symmetric image-text InfoNCE: mean of cross-entropy image->text and text->image.

    Embeddings are L2-normalised first (``normalize=False`` if the model already does).
    ``temperature`` 0.07 as CLIP; ``learnable_temperature=True`` makes it a parameter
    (log 1/T, clamped at ``max_logit_scale`` = 100).
    Components: ``image_to_text``, ``text_to_image``, ``logit_scale``.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        max_logit_scale: float = 100.0,
        normalize: bool = True,
        chunk_size: int | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(
            temperature, learnable=learnable_temperature, max_scale=max_logit_scale
        )
        self.normalize = normalize
        self.chunk_size = check_chunk_size(chunk_size)
        self.gather_distributed = gather_distributed

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        check_pair("image_emb", image_emb, "text_emb", text_emb)
        dtype = compute_dtype(image_emb, text_emb)
        img = _prepare(image_emb, dtype, self.normalize)
        txt = _prepare(text_emb, dtype, self.normalize)
        scale = self.logit_scale(img)
        i2t, t2i = info_nce_pair(
            img,
            txt,
            scale,
            chunk_size=self.chunk_size,
            gather_distributed=self.gather_distributed,
        )
        loss = (i2t + t2i) / 2
        return self._record(loss, image_to_text=i2t, text_to_image=t2i, logit_scale=scale)


@register_loss("siglip")
class SigLipLoss(LossModule):
    """Pairwise sigmoid loss: every image-text pair is a binary match / no-match.

    ``loss = -sum_ij log sigmoid(z_ij (t * cos_ij + b)) / n`` with z_ij = 1 on the diagonal
    and -1 elsewhere, t = 1/temperature (10 as SigLIP's init) and b = ``bias`` (-10).
    ``learnable=True`` makes both parameters. Components: ``logit_scale``, ``logit_bias``.
    """

    logit_bias: torch.Tensor

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        bias: float = -10.0,
        learnable: bool = False,
        max_logit_scale: float = 100.0,
        normalize: bool = True,
        chunk_size: int | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(temperature, learnable=learnable, max_scale=max_logit_scale)
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not math.isfinite(bias):
            from torchsmith.interfaces import ConfigError

            raise ConfigError(f"bias must be a finite number, got {bias!r}")
        value = torch.tensor(float(bias))
        if learnable:
            self.logit_bias = nn.Parameter(value)
        else:
            self.register_buffer("logit_bias", value, persistent=False)
        self.normalize = normalize
        self.chunk_size = check_chunk_size(chunk_size)
        self.gather_distributed = gather_distributed

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        check_pair("image_emb", image_emb, "text_emb", text_emb)
        dtype = compute_dtype(image_emb, text_emb)
        img = _prepare(image_emb, dtype, self.normalize)
        txt = _prepare(text_emb, dtype, self.normalize)
        scale, bias = self.logit_scale(img), self.logit_bias.to(dtype)
        n, offset = img.shape[0], 0
        if self.gather_distributed and dist.world_size() > 1:
            txt, offset = dist.gather(txt), dist.rank() * n
        total = sigmoid_pair_loss_blocks(
            img, txt, scale, bias, offset=offset, chunk_size=self.chunk_size
        )
        return self._record(total / n, logit_scale=scale, logit_bias=bias)


@register_loss("cross_modal")
class CrossModalLoss(LossModule):
    """InfoNCE over every pair of N >= 2 modalities, averaged over the pairs.

    Call with tensors (``loss(image, text, audio)``) or one mapping of modality name to
    tensor; row i of every modality describes the same item. Each pair (a, b) gets CLIP's
    symmetric loss. Components: one per pair, named ``a-b`` (indices or names).
    """

    def __init__(
        self,
        *,
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        max_logit_scale: float = 100.0,
        normalize: bool = True,
        chunk_size: int | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.logit_scale = LogitScale(
            temperature, learnable=learnable_temperature, max_scale=max_logit_scale
        )
        self.normalize = normalize
        self.chunk_size = check_chunk_size(chunk_size)
        self.gather_distributed = gather_distributed

    def forward(self, *embeddings: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        named = _named_modalities(embeddings)
        dtype = compute_dtype(*named.values())
        prepared = {k: _prepare(v, dtype, self.normalize) for k, v in named.items()}
        scale = self.logit_scale(next(iter(prepared.values())))
        parts: dict[str, torch.Tensor] = {}
        for a, b in itertools.combinations(prepared, 2):
            ab, ba = info_nce_pair(
                prepared[a],
                prepared[b],
                scale,
                chunk_size=self.chunk_size,
                gather_distributed=self.gather_distributed,
            )
            parts[f"{a}-{b}"] = (ab + ba) / 2
        loss = torch.stack(list(parts.values())).mean()
        return self._record(loss, **parts, logit_scale=scale)


def _named_modalities(
    embeddings: tuple[torch.Tensor | Mapping[str, torch.Tensor], ...],
) -> dict[str, torch.Tensor]:
    from torchsmith.interfaces import DataError

    if len(embeddings) == 1 and isinstance(embeddings[0], Mapping):
        named = dict(embeddings[0])
    else:
        named = {}
        for i, x in enumerate(embeddings):
            if isinstance(x, Mapping):
                raise DataError("pass either tensors or one mapping of name -> tensor, not both")
            named[str(i)] = x
    if len(named) < 2:
        raise DataError(f"cross_modal needs at least 2 modalities, got {len(named)}")
    first_name, first = next(iter(named.items()))
    check_embeddings(f"embeddings[{first_name!r}]", first)
    for name, x in named.items():
        check_pair(f"embeddings[{first_name!r}]", first, f"embeddings[{name!r}]", x)
    return named
