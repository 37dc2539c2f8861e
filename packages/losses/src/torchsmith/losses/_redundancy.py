"""Non-contrastive losses on batch statistics: VICReg (Bardes et al. 2022) and
Barlow Twins (Zbontar et al. 2021).

Both need statistics of the whole batch, so ``gather_distributed=True`` gathers the
embeddings with gradient and every rank computes the global loss (never an all_reduce
outside autograd, which scales gradients by 1/world_size: lightly #1977).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _distributed as dist
from ._base import LossModule, compute_dtype
from ._checks import check_pair, check_positive
from ._registry import register_loss

__all__ = ["BarlowTwinsLoss", "VICRegLoss"]


def _off_diagonal_sq_sum(m: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal entries of a square matrix, without a copy or a mask.

    Dropping the last element of the flattened (d, d) matrix and viewing it as
    (d - 1, d + 1) puts every diagonal entry in column 0. Not sum(m^2) - sum(diag^2):
    that cancels badly when the diagonal is ~1.
    """
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].pow(2).sum()


def _need_two_rows(name: str, z: torch.Tensor) -> None:
    from torchsmith.interfaces import DataError

    if z.shape[0] < 2:
        raise DataError(
            f"{name} needs a batch of at least 2 to estimate variances, got shape {tuple(z.shape)}"
        )


@register_loss("vicreg")
class VICRegLoss(LossModule):
    """VICReg: lambda * invariance + mu * variance + nu * covariance (25, 25, 1).

    invariance = mse(z_a, z_b); variance = mean over both branches of
    mean_d relu(1 - sqrt(var_d + eps)); covariance = sum over both branches of the squared
    off-diagonal covariances / dim. Components (unweighted): ``invariance``,
    ``variance``, ``covariance``.
    """

    def __init__(
        self,
        *,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
        projection: nn.Module | None = None,
    ) -> None:
        super().__init__(projection=projection)
        self.lambda_param = float(lambda_param)
        self.mu_param = float(mu_param)
        self.nu_param = float(nu_param)
        self.eps = check_positive("eps", eps)
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        check_pair("z_a", z_a, "z_b", z_b)
        z_a, z_b = self._project(z_a), self._project(z_b)
        dtype = compute_dtype(z_a, z_b)
        z_a, z_b = z_a.to(dtype), z_b.to(dtype)
        invariance = F.mse_loss(z_a, z_b)  # local mean; the rank average is the global one
        if self.gather_distributed and dist.world_size() > 1:
            z_a, z_b = dist.gather(z_a), dist.gather(z_b)
        _need_two_rows("vicreg", z_a)
        variance = (self._variance(z_a) + self._variance(z_b)) / 2
        covariance = self._covariance(z_a) + self._covariance(z_b)
        loss = (
            self.lambda_param * invariance + self.mu_param * variance + self.nu_param * covariance
        )
        return self._record(loss, invariance=invariance, variance=variance, covariance=covariance)

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(1.0 - std).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        z = z - z.mean(dim=0)
        cov = (z.T @ z) / (n - 1)  # (d, d)
        return _off_diagonal_sq_sum(cov) / d


@register_loss("barlow_twins")
class BarlowTwinsLoss(LossModule):
    """Barlow Twins: sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2, lambda = 5e-3.

    C is the cross-correlation of the batch-standardised embeddings (biased variance,
    eps 1e-5 as batch norm). Components (unweighted): ``invariance``, ``redundancy``.
    """

    def __init__(
        self,
        *,
        lambda_param: float = 5e-3,
        eps: float = 1e-5,
        gather_distributed: bool = False,
        projection: nn.Module | None = None,
    ) -> None:
        super().__init__(projection=projection)
        self.lambda_param = float(lambda_param)
        self.eps = check_positive("eps", eps)
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        check_pair("z_a", z_a, "z_b", z_b)
        z_a, z_b = self._project(z_a), self._project(z_b)
        dtype = compute_dtype(z_a, z_b)
        z_a, z_b = z_a.to(dtype), z_b.to(dtype)
        if self.gather_distributed and dist.world_size() > 1:
            z_a, z_b = dist.gather(z_a), dist.gather(z_b)
        _need_two_rows("barlow_twins", z_a)
        n = z_a.shape[0]
        # (d, d); in-place divide: mm's backward needs only its inputs
        c = torch.mm(self._standardize(z_a).T, self._standardize(z_b)).div_(n)
        invariance = (c.diagonal() - 1.0).pow(2).sum()
        redundancy = _off_diagonal_sq_sum(c)
        loss = invariance + self.lambda_param * redundancy
        return self._record(loss, invariance=invariance, redundancy=redundancy)

    def _standardize(self, z: torch.Tensor) -> torch.Tensor:
        # (z - mean) / sqrt(biased var + eps) per feature: batch norm's fused kernel
        return F.batch_norm(z, None, None, training=True, eps=self.eps)
