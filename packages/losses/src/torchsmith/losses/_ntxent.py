"""SimCLR's NT-Xent (Chen et al. 2020) and MoCo's queue-based InfoNCE (He et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _distributed as dist
from ._base import LogitScale, LossModule, compute_dtype, normalize
from ._blockwise import logsumexp_blocks
from ._checks import check_chunk_size, check_pair
from ._queue import FeatureQueue
from ._registry import register_loss

__all__ = ["MoCoLoss", "NTXentLoss"]


def _check_size(name: str, value: int) -> int:
    from torchsmith.interfaces import ConfigError

    if not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    return value


@register_loss("ntxent")
class NTXentLoss(LossModule):
    """NT-Xent: each of the 2N views is classified against the other 2N - 1.

    ``loss(z1, z2)`` with z1[i], z2[i] two views of item i. Embeddings are L2-normalised,
    logits are cosine / temperature (0.5, lightly's default), the view itself is never a
    candidate. ``memory_bank_size > 0`` adds that many past embeddings (both views,
    detached, updated only by training forwards) as extra negatives.
    When all 2N embeddings are the same vector every logit is equal and the loss is
    log(2N - 1), the value the tests pin. ``projection`` (e.g.
    ``simclr_projection_head(2048)``) is applied to z1 and z2, one call each.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.5,
        learnable_temperature: bool = False,
        normalize: bool = True,
        memory_bank_size: int = 0,
        chunk_size: int | None = None,
        gather_distributed: bool = False,
        projection: nn.Module | None = None,
    ) -> None:
        super().__init__(projection=projection)
        self.logit_scale = LogitScale(temperature, learnable=learnable_temperature)
        self.normalize = normalize
        self.chunk_size = check_chunk_size(chunk_size)
        self.gather_distributed = gather_distributed
        size = _check_size("memory_bank_size", memory_bank_size)
        self.memory_bank = FeatureQueue(size) if size else None

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair("z1", z1, "z2", z2)
        z1, z2 = self._project(z1), self._project(z2)
        dtype = compute_dtype(z1, z2)
        z1, z2 = z1.to(dtype), z2.to(dtype)
        if self.normalize:
            z1, z2 = normalize(z1), normalize(z2)
        n = z1.shape[0]
        offset, total = 0, n
        if self.gather_distributed and dist.world_size() > 1:
            offset, total = dist.rank() * n, dist.world_size() * n
            all1, all2 = dist.gather(z1), dist.gather(z2)
        else:
            all1, all2 = z1, z2
        anchors = torch.cat([z1, z2])  # (2n, d)
        candidates = torch.cat([all1, all2])  # (2N, d)
        if self.memory_bank is not None:
            candidates = torch.cat([candidates, self.memory_bank.get(candidates)])
        local = torch.arange(n, device=z1.device) + offset
        self_cols = torch.cat([local, local + total])  # where each anchor sits
        pos_cols = torch.cat([local + total, local])  # where its other view sits
        scale = self.logit_scale(z1)
        loss = self._infonce(anchors, candidates, scale, self_cols, pos_cols)
        if self.memory_bank is not None and self.training and torch.is_grad_enabled():
            self.memory_bank.push(torch.cat([all1, all2]))
        return self._record(loss, logit_scale=scale)

    def _infonce(
        self,
        anchors: torch.Tensor,
        candidates: torch.Tensor,
        scale: torch.Tensor,
        self_cols: torch.Tensor,
        pos_cols: torch.Tensor,
    ) -> torch.Tensor:
        if self.chunk_size is None or self.chunk_size >= anchors.shape[0]:
            logits = (anchors @ candidates.T) * scale  # (2n, 2N [+ bank])
            # A scalar fill: a -inf tensor built from a Python float would be a host-to-device
            # copy, which waits for the GPU on every step.
            logits = logits.scatter(1, self_cols[:, None], float("-inf"))
            return F.cross_entropy(logits, pos_cols)
        lse, _ = logsumexp_blocks(
            anchors, candidates, scale, chunk_size=self.chunk_size, self_cols=self_cols
        )
        pos = (anchors * candidates[pos_cols]).sum(-1) * scale
        return (lse - pos).mean()


@register_loss("moco")
class MoCoLoss(LossModule):
    """MoCo's InfoNCE: query q_i against its key k_i and a queue of past keys.

    ``loss(query, key)``: key comes from the momentum encoder and is detached here.
    logits = [q.k, q.queue] / temperature (0.2 as MoCo v2), target 0. The queue (random
    unit vectors at start, as MoCo) is updated with the keys only by training forwards
    (``module.train()`` and grad enabled), after the loss is computed; with
    ``gather_distributed`` the keys of every rank are enqueued.
    """

    def __init__(
        self,
        *,
        queue_size: int = 4096,
        dim: int | None = None,
        temperature: float = 0.2,
        normalize: bool = True,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if _check_size("queue_size", queue_size) == 0:
            from torchsmith.interfaces import ConfigError

            raise ConfigError("queue_size must be >= 1 for moco")
        if dim is not None and _check_size("dim", dim) == 0:  # None: the first batch's
            from torchsmith.interfaces import ConfigError

            raise ConfigError("dim must be >= 1 (or None, the first batch's), got 0")
        self.queue = FeatureQueue(queue_size, dim)
        self.logit_scale = LogitScale(temperature)
        self.normalize = normalize
        self.gather_distributed = gather_distributed

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        check_pair("query", query, "key", key)
        dtype = compute_dtype(query, key)
        q, k = query.to(dtype), key.detach().to(dtype)
        if self.normalize:
            q, k = normalize(q), normalize(k)
        negatives = self.queue.get(q)  # (K, d)
        scale = self.logit_scale(q)
        pos = (q * k).sum(-1, keepdim=True)  # (n, 1)
        logits = torch.cat([pos, q @ negatives.T], dim=1) * scale  # (n, 1 + K)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, target)
        if self.training and torch.is_grad_enabled():
            self.queue.push(dist.gather(k) if self.gather_distributed else k)
        return self._record(loss, positive_similarity=pos.mean())
