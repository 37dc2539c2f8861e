"""Sizes no machine holds fail as config errors, before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import ExperimentConfig, build_model, train, validate_config
from torchsmith.trainer import _model_size as model_size
from torchsmith.trainer._config import CLIPConfig, EncoderConfig, GPTConfig, MLPConfig
from torchsmith.trainer._model_size import parameter_count

SECTIONS = {"mlp": MLPConfig, "encoder": EncoderConfig, "gpt": GPTConfig, "clip": CLIPConfig}


def _alone(model: dict) -> ExperimentConfig:
    """A config of this model section alone (a digits task would refuse most of them)."""
    return ExperimentConfig.model_construct(model=SECTIONS[model["kind"]](**model))


sizes = st.integers(1, 24)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["mlp", "encoder", "gpt", "clip"]),
    a=sizes,
    b=sizes,
    c=sizes,
    layers=st.integers(0, 3),
    heads=st.sampled_from([1, 2]),
)
def test_the_count_is_what_the_built_model_holds(
    kind: str, a: int, b: int, c: int, layers: int, heads: int
) -> None:
    model = {
        "mlp": {"kind": "mlp", "in_features": a, "hidden": [b] * layers, "num_classes": c + 1},
        "encoder": {"kind": "encoder", "in_features": a, "hidden": b, "projection": c},
        "gpt": {
            "kind": "gpt",
            "vocab_size": a,
            "block_size": b,
            "n_layer": layers + 1,
            "n_head": heads,
            "n_embd": 2 * c,
        },
        "clip": {
            "kind": "clip",
            "image_features": a,
            "vocab_size": b,
            "embed_dim": c,
            "hidden": layers + 1,
        },
    }[kind]
    config = _alone(model)
    built = build_model(config)
    assert parameter_count(config.model) == sum(p.numel() for p in built.parameters())


@pytest.mark.parametrize(
    "model",
    [
        {"kind": "gpt", "n_layer": 10**9, "vocab_size": 65},  # as long to build as to refuse
        {"kind": "mlp", "hidden": [10**7, 10**7]},
        {"kind": "encoder", "hidden": 10**12},
        {"kind": "clip", "vocab_size": 10**12},
    ],
)
def test_a_model_bigger_than_memory_is_refused_before_it_is_built(
    model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("the model was built before it was refused")

    monkeypatch.setattr("torchsmith.trainer._build._builtin_model", never)
    with pytest.raises(ConfigError, match=r"^model: the '\w+' model \(.*\) would hold .* GiB"):
        build_model(_alone(model))


def test_a_size_the_allocator_refuses_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_size, "_memory_bytes", lambda: None)  # memory unknown: no count
    config = _alone({"kind": "mlp", "hidden": [2**40]})
    with pytest.raises(ConfigError, match=r"^model: cannot build the 'mlp' model: RuntimeError"):
        build_model(config)


def test_a_model_too_big_fails_before_any_file_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model: the 'mlp' model"):
        train({"model": {"kind": "mlp", "hidden": [10**7, 10**7]}}, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_worker_count_no_machine_runs_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"loader\.num_workers: Input should be less than or"):
        validate_config({"loader": {"num_workers": 2**40}})


def test_a_model_the_gpu_cannot_hold_is_a_config_error() -> None:
    from torch import nn

    from torchsmith.trainer._build import _on_device

    class TooBig(nn.Linear):
        def to(self, *args: object, **kwargs: object) -> nn.Module:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB\nmore")

    with pytest.raises(
        ConfigError,
        match=r"^model: 6 parameters do not fit on cuda: CUDA out of memory\. Tried .* GiB$",
    ):
        _on_device(TooBig(2, 2), torch.device("cuda"))


def test_a_containers_memory_limit_and_torchruns_copies_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a container limited to 1 GiB, 200M parameters (0.75 GiB) fit once, not twice."""
    (tmp_path / "memory.max").write_text(f"{2**30}\n")
    (tmp_path / "unlimited").write_text("max\n")
    limits = (tmp_path / "missing", tmp_path / "unlimited", tmp_path / "memory.max")
    monkeypatch.setattr(model_size, "CGROUP_LIMITS", limits)
    assert model_size._memory_bytes() == 2**30
    config = _alone({"kind": "mlp", "in_features": 1, "hidden": [50_000_000, 2], "num_classes": 2})
    model_size.check_fits(config.model)  # 0.75 of 1 GiB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(
        ConfigError, match=r"GiB in fp32, in each of 2 processes, more than .* 1 GiB"
    ):
        model_size.check_fits(config.model)
