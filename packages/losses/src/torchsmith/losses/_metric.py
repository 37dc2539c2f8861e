"""Label-driven losses: supervised contrastive (Khosla et al. 2020) and triplet with mining.

Triplet mining follows Hermans et al. 2017 ("In Defense of the Triplet Loss"): for each
anchor the farthest positive and the nearest negative in the batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import _distributed as dist
from ._base import LogitScale, LossModule, compute_dtype, normalize
from ._checks import check_embeddings, check_labels, check_positive, warn_caller
from ._registry import register_loss

__all__ = ["SupConLoss", "TripletLoss"]


def _flatten_views(features: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) or (N, V, D) features with (N,) labels -> (N*V, D) rows and their labels."""
    from torchsmith.interfaces import DataError

    if isinstance(features, torch.Tensor) and features.dim() == 3:
        n, v, d = features.shape
        lab = check_labels("labels", labels, n)
        # row-major (item, view) order: item i's views are rows i*V ... i*V + V - 1
        return features.reshape(n * v, d), lab.repeat_interleave(v)
    if isinstance(features, torch.Tensor) and features.dim() not in (2, 3):
        raise DataError(
            f"features must have shape (batch, dim) or (batch, views, dim), "
            f"got shape {tuple(features.shape)}"
        )
    x = check_embeddings("features", features)
    return x, check_labels("labels", labels, x.shape[0])


@register_loss("supcon")
class SupConLoss(LossModule):
    """Supervised contrastive loss (SupCon "L_out"), temperature 0.1 as in the paper.

    ``loss(features, labels)``; features (N, D) or (N, views, D), labels (N,) ints.
    For anchor i with positives P(i) (same label, not i) among all others A(i):
    ``L_i = -1/|P(i)| sum_p log softmax_A(i)(cos/T)_p``, averaged over anchors that have
    at least one positive. If no anchor has one, a RuntimeWarning is raised and the value
    falls back to the negatives-only term ``mean_i log mean_{a != i} exp(cos_ia / T)``
    (finite, and its gradient still pushes samples apart); a single sample gives 0 with
    the same warning. Components: ``anchors_with_positives`` (a fraction).
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        normalize: bool = True,
        gather_distributed: bool = False,
        projection: nn.Module | None = None,
    ) -> None:
        super().__init__(projection=projection)
        self.logit_scale = LogitScale(temperature)
        self.normalize = normalize
        self.gather_distributed = gather_distributed

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, lab = _flatten_views(features, labels)
        x = self._project(x)  # every view in one call: (N * views, D)
        x = x.to(compute_dtype(x))
        if self.normalize:
            x = normalize(x)
        n, offset = x.shape[0], 0
        cands, cand_labels = x, lab
        if self.gather_distributed and dist.world_size() > 1:
            offset = dist.rank() * n
            cands, cand_labels = dist.gather(x), dist.gather(lab)
        # By comparison: assigning True into a CUDA mask copies it from the host (a sync).
        rows = torch.arange(n, device=x.device)
        is_self = torch.arange(cands.shape[0], device=x.device)[None, :] == (rows + offset)[:, None]
        logits = ((x @ cands.T) * self.logit_scale(x)).masked_fill(is_self, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        positive = (lab[:, None] == cand_labels[None, :]) & ~is_self
        n_pos = positive.sum(1)
        has_pos = n_pos > 0
        count = has_pos.sum()
        if self.gather_distributed and dist.world_size() > 1:
            # Average over the anchors of *every* rank, or the per-rank means would weigh
            # ranks with fewer positive anchors more; x world as DDP averages gradients.
            count = dist.all_reduce_sum(count.detach().clone()) / dist.world_size()
        anchors = float(count)  # one host sync: the warning needs it
        if anchors == 0:
            return self._no_positives(logits, cands.shape[0])
        mean_log_prob = torch.where(positive, log_prob, 0.0).sum(1) / n_pos.clamp_min(1)
        loss = -torch.where(has_pos, mean_log_prob, 0.0).sum() / anchors
        return self._record(loss, anchors_with_positives=has_pos.float().mean())

    def _no_positives(self, logits: torch.Tensor, candidates: int) -> torch.Tensor:
        if candidates == 1:
            warn_caller("supcon got a single sample: no positive or negative pair, loss is 0")
            loss = logits.new_zeros(()) + 0.0 * torch.nan_to_num(logits, neginf=0.0).sum()
        else:
            warn_caller(
                "supcon: no anchor has a positive (every label is unique); using the "
                "negatives-only term mean_i log mean_{a!=i} exp(cos/T) instead"
            )
            lse = torch.logsumexp(logits, dim=1)
            loss = (lse - math.log(candidates - 1)).mean()
        return self._record(loss, anchors_with_positives=logits.new_zeros(()))


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (n, n); the sqrt never sees 0, so gradients stay finite."""
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    return d2.clamp_min(torch.finfo(x.dtype).tiny).sqrt()


@register_loss("triplet")
class TripletLoss(LossModule):
    """Triplet margin loss on Euclidean distances with in-batch mining.

    ``loss(embeddings, labels)``. ``mining="batch_hard"``: per anchor the farthest
    positive and nearest negative, mean over anchors that have both. ``mining="all"``:
    every valid (anchor, positive, negative), mean over them. ``soft_margin=True`` uses
    softplus instead of the hinge, ``softplus(margin + d_p - d_n)`` as
    pytorch-metric-learning's ``smooth_loss``: with ``margin=0`` it is Hermans et al.'s
    soft margin. A batch with no valid triplet warns and returns 0.
    Components: ``positive_distance``, ``negative_distance`` (means over used anchors).
    """

    def __init__(
        self,
        *,
        margin: float = 0.2,
        mining: Literal["batch_hard", "all"] = "batch_hard",
        normalize: bool = True,
        soft_margin: bool = False,
    ) -> None:
        super().__init__()
        from torchsmith.interfaces import ConfigError

        if mining not in ("batch_hard", "all"):
            raise ConfigError(f"mining must be 'batch_hard' or 'all', got {mining!r}")
        self.margin = check_positive("margin", margin) if not soft_margin else float(margin)
        if not self.margin >= 0 or self.margin == float("inf"):  # soft: 0 is Hermans' margin
            raise ConfigError(f"margin must be a finite number >= 0, got {margin!r}")
        self.mining = mining
        self.normalize = normalize
        self.soft_margin = soft_margin

    def _hinge(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) if self.soft_margin else F.relu(x)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = check_embeddings("embeddings", embeddings)
        lab = check_labels("labels", labels, x.shape[0])
        x = x.to(compute_dtype(x))
        if self.normalize:
            x = normalize(x)
        d = pairwise_distances(x)  # (n, n)
        same = lab[:, None] == lab[None, :]
        positive = same & ~torch.eye(len(lab), dtype=torch.bool, device=x.device)
        negative = ~same
        if self.mining == "all":
            return self._batch_all(d, positive, negative)
        hardest_pos = d.masked_fill(~positive, float("-inf")).amax(1)
        hardest_neg = d.masked_fill(~negative, float("inf")).amin(1)
        valid = positive.any(1) & negative.any(1)
        count = int(valid.sum())
        if count == 0:
            return self._no_triplets(d)
        losses = torch.where(valid, self._hinge(self.margin + hardest_pos - hardest_neg), 0.0)
        return self._record(
            losses.sum() / count,
            positive_distance=torch.where(valid, hardest_pos, 0.0).sum() / count,
            negative_distance=torch.where(valid, hardest_neg, 0.0).sum() / count,
        )

    def _batch_all(
        self, d: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        valid = positive[:, :, None] & negative[:, None, :]  # (a, p, n)
        count = int(valid.sum())
        if count == 0:
            return self._no_triplets(d)
        losses = self._hinge(self.margin + d[:, :, None] - d[:, None, :])
        loss = torch.where(valid, losses, 0.0).sum() / count
        return self._record(
            loss,
            positive_distance=d[positive].mean(),
            negative_distance=d[negative].mean(),
        )

    def _no_triplets(self, d: torch.Tensor) -> torch.Tensor:
        warn_caller(
            "triplet: no anchor has both a positive and a negative in this batch; loss is 0"
        )
        zero = 0.0 * d.sum()
        return self._record(zero, positive_distance=zero, negative_distance=zero)
