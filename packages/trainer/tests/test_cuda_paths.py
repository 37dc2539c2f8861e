"""CUDA-only decisions, checked on the CPU by standing in for torch.cuda where needed.

No GPU runs these paths in CI; each test pins the mechanism that would break on one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import CheckpointManager, load_checkpoint
from torchsmith.trainer._distributed import init_distributed
from torchsmith.trainer._rng import rng_state, set_rng_state


def test_a_checkpoint_loads_onto_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CUDA run's optimizer state would otherwise land on cuda:0 in every DDP rank, and
    # could not be read at all where CUDA is absent.
    path = CheckpointManager(tmp_path).save({"model": {"w": torch.ones(2)}}, step=1, metrics={})
    seen: dict[str, Any] = {}
    real_load = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    load_checkpoint(path)
    assert seen["weights_only"] is True and seen["map_location"] == "cpu"


def test_only_this_processs_gpu_rng_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    restored: list[torch.Tensor] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    state = rng_state()
    assert torch.equal(state["cuda"], torch.tensor([7], dtype=torch.uint8))  # one GPU's
    set_rng_state(state)
    # An older checkpoint's list (one state per visible GPU): this process's entry, and the
    # first when fewer GPUs were visible then than the index asks for.
    set_rng_state({**state, "cuda": [torch.tensor([0]), torch.tensor([1])]})
    set_rng_state({**state, "cuda": [torch.tensor([5])]})
    assert [int(t[0]) for t in restored] == [7, 1, 5]


def test_more_processes_than_gpus_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.cuda.set_device(1) on a one-GPU machine says only "invalid device ordinal".
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"LOCAL_RANK is 1 and 1 GPU\(s\) are visible"):
        init_distributed("cuda")
