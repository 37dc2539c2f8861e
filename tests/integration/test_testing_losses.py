"""torchsmith-testing's LossTest on torchsmith-losses: gradcheck, half precision, invariances.

Each loss declares the invariances its definition implies: contrastive losses over
normalised embeddings ignore the embeddings' scale and the order of the pairs; softmax
cross-entropy ignores a constant added to every logit.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

losses = pytest.importorskip("torchsmith.losses")
testing = pytest.importorskip("torchsmith.testing")

LossTest = testing.LossTest
permute_batch, scale_input, add_constant = (
    testing.permute_batch,
    testing.scale_input,
    testing.add_constant,
)


class TestNTXent(LossTest):
    invariances = {  # noqa: RUF012
        "pair order": permute_batch("z1", "z2"),
        "embedding scale": scale_input("z1", 3.0),
    }

    def make_loss(self) -> Any:
        return losses.get_loss("ntxent", temperature=0.5)

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"z1": torch.randn(6, 8), "z2": torch.randn(6, 8)}


class TestClip(LossTest):
    invariances = {  # noqa: RUF012
        "pair order": permute_batch("image_emb", "text_emb"),
        "embedding scale": scale_input("text_emb", 0.25),
    }

    def make_loss(self) -> Any:
        return losses.get_loss("clip")

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"image_emb": torch.randn(5, 8), "text_emb": torch.randn(5, 8)}


class TestCrossEntropy(LossTest):
    invariances = {  # noqa: RUF012
        "logit shift": add_constant("logits", 2.5),
        "batch order": permute_batch("logits", "targets"),
    }

    def make_loss(self) -> Any:
        return losses.get_loss("cross_entropy")

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"logits": torch.randn(6, 4), "targets": torch.randint(0, 4, (6,))}


class TestBarlowTwins(LossTest):
    invariances = {"pair order": permute_batch("z_a", "z_b")}  # noqa: RUF012

    def make_loss(self) -> Any:
        return losses.get_loss("barlow_twins")

    def make_inputs(self) -> dict[str, torch.Tensor]:
        return {"z_a": torch.randn(8, 4), "z_b": torch.randn(8, 4)}
