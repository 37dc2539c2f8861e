"""Per-step losses read nothing back to the host (each read is a device sync on CUDA).

On the CPU, host reads of tensors are caught by making ``Tensor.__bool__``, ``item``,
``__int__``, ``__index__`` and ``tolist`` raise; the classification losses run on the
``meta`` device, where any read of a value fails as well.
"""

from __future__ import annotations

import pytest
import torch

from torchsmith.losses import CrossEntropyLoss, FocalLoss
from torchsmith.losses._queue import FeatureQueue


@pytest.fixture
def no_host_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def host_read(self: torch.Tensor, *args: object) -> None:
        raise AssertionError("a tensor was read back to the host (a device sync on CUDA)")

    for name in ("__bool__", "item", "__int__", "__index__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, host_read)


@pytest.mark.usefixtures("no_host_reads")
@pytest.mark.parametrize(
    "loss",
    [
        CrossEntropyLoss(),
        CrossEntropyLoss(label_smoothing=0.1, weight=[1.0, 2.0, 0.5]),
        FocalLoss(),
        FocalLoss(alpha=[1.0, 2.0, 0.5]),
    ],
    ids=["cross_entropy", "cross_entropy-weighted-smoothed", "focal", "focal-alpha"],
)
def test_classification_losses_read_nothing_back(loss: torch.nn.Module) -> None:
    logits = torch.randn(4, 3, device="meta", requires_grad=True)
    targets = torch.zeros(4, dtype=torch.long, device="meta")
    value = loss.to("meta")(logits, targets)
    assert value.shape == () and value.device.type == "meta"


@pytest.mark.usefixtures("no_host_reads")
def test_the_feature_queue_pushes_without_reading_its_pointer() -> None:
    queue = FeatureQueue(size=5, dim=3)
    for _ in range(3):
        queue.push(torch.randn(2, 3))
    assert queue._start == 1


def test_the_queue_pointer_survives_a_state_dict_round_trip() -> None:
    queue = FeatureQueue(size=5, dim=3)
    for _ in range(3):
        queue.push(torch.randn(2, 3))
    assert int(queue.state_dict()["pointer"]) == 1
    fresh = FeatureQueue(size=5)
    fresh.load_state_dict(queue.state_dict())
    batch = torch.randn(2, 3)
    queue.push(batch)
    fresh.push(batch)
    torch.testing.assert_close(fresh.features, queue.features)
    assert int(fresh.pointer) == int(queue.pointer) == 3


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_all_ignored_targets_give_zero_and_zero_gradients(
    weight: list[float] | None, smoothing: float
) -> None:
    logits = torch.randn(3, 3, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="ignore_index"):
        value = CrossEntropyLoss(label_smoothing=smoothing, weight=weight)(
            logits, torch.full((3,), -100)
        )
    value.backward()
    assert value.item() == 0.0
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros(3, 3))
