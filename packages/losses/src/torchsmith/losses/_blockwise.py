"""Similarity-matrix reductions computed block by block, for large batches.

A (n, m) logit matrix is never held whole: rows are taken ``chunk_size`` at a time, each
block's log-sum-exp (row-wise, and column-wise merged online with ``logaddexp``) is kept,
and the block is recomputed in backward by activation checkpointing. Peak memory is
O(chunk_size x m) instead of O(n x m); results match the dense path to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["logsumexp_blocks", "sigmoid_pair_loss_blocks"]


def _masked_logits(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, self_cols: torch.Tensor | None
) -> torch.Tensor:
    logits = (a @ b.T) * scale  # (rows, m)
    if self_cols is not None:  # an anchor is never its own negative
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask.scatter_(1, self_cols[:, None], True)
        logits = logits.masked_fill(mask, float("-inf"))
    return logits


def _lse_block(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    self_cols: torch.Tensor | None,
    need_cols: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = _masked_logits(a, b, scale, self_cols)
    cols = torch.logsumexp(logits, dim=0) if need_cols else logits.new_empty(0)
    return torch.logsumexp(logits, dim=1), cols


def logsumexp_blocks(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    *,
    chunk_size: int | None = None,
    self_cols: torch.Tensor | None = None,
    need_cols: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row (and optionally column) log-sum-exp of ``scale * a @ b.T``.

    a: (n, d), b: (m, d). ``self_cols[i]`` is a column excluded from row i. Returns
    (row_lse (n,), col_lse (m,) or None).
    """
    n = a.shape[0]
    if chunk_size is None or chunk_size >= n:
        rows, cols = _lse_block(a, b, scale, self_cols, need_cols)
        return rows, cols if need_cols else None
    row_parts: list[torch.Tensor] = []
    col_lse: torch.Tensor | None = None
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block_cols = None if self_cols is None else self_cols[start:stop]
        rows, cols = checkpoint(
            _lse_block,
            a[start:stop],
            b,
            scale,
            block_cols,
            need_cols,
            use_reentrant=False,
            preserve_rng_state=False,
        )
        row_parts.append(rows)
        if need_cols:  # online log-sum-exp over row blocks
            col_lse = cols if col_lse is None else torch.logaddexp(col_lse, cols)
    return torch.cat(row_parts), col_lse


def _sigmoid_block(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, offset: int
) -> torch.Tensor:
    logits = (a @ b.T) * scale + bias  # (rows, m)
    # -log sigmoid(-x) = softplus(x) for negatives; -log sigmoid(x) = softplus(x) - x.
    return F.softplus(logits).sum() - logits.diagonal(offset=offset).sum()


def sigmoid_pair_loss_blocks(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    *,
    offset: int = 0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Sum over all pairs of SigLIP's ``-log sigmoid(z_ij * (scale a_i.b_j + bias))``.

    Row i's positive is column ``offset + i``; every other pair is a negative.
    """
    n = a.shape[0]
    if chunk_size is None or chunk_size >= n:
        return _sigmoid_block(a, b, scale, bias, offset)
    total = a.new_zeros(())
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        part = checkpoint(
            _sigmoid_block,
            a[start:stop],
            b,
            scale,
            bias,
            offset + start,
            use_reentrant=False,
            preserve_rng_state=False,
        )
        total = total + part
    return total
