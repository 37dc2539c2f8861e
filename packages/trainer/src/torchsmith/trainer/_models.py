"""The small models the shipped recipes train; any ``nn.Module`` works with the loop."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_features: int, hidden: list[int], out_features: int, dropout: float = 0.0) -> nn.Module:
    """Linear -> ReLU (-> Dropout) blocks, then a linear head."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """SimCLR's f (representation) and g (projection head); forward returns g(f(x))."""

    def __init__(self, in_features: int = 64, hidden: int = 128, projection: int = 32) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.ReLU()
        )
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, projection)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z: torch.Tensor = self.head(self.backbone(x))  # (B, projection)
        return z


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        out: torch.Tensor = self.proj(y.transpose(1, 2).reshape(B, T, C))
        return out


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class GPT(nn.Module):
    """A decoder-only transformer; forward maps tokens (B, T) to logits (B, T, vocab)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        # Untied head: safetensors stores each tensor once, and tying buys nothing at this size.
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return logits


class DualEncoder(nn.Module):
    """CLIP in miniature: an image MLP and a bag-of-bytes text encoder into one space."""

    def __init__(self, image_features: int, vocab_size: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.image = mlp(image_features, [hidden], embed_dim)
        self.token = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.text = nn.Sequential(nn.ReLU(), nn.Linear(hidden, embed_dim))
        # log(1/0.07), the CLIP paper's initial temperature
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = (tokens != 0).unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.token(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, hidden)
        # The scale is kept at most 100, as in CLIP (Radford et al. 2021, section 2.5: a
        # larger one makes training unstable). Clamped in place, as CLIP does after each
        # step, not in the graph: there a clamp's zero gradient would hold it above 100.
        with torch.no_grad():
            self.logit_scale.clamp_(max=math.log(100.0))
        return self.image(images), self.text(pooled), self.logit_scale.exp()
