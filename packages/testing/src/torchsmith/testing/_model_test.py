"""ModelTest: fourteen generic checks for any nn.Module, one pytest item each.

    class TestTinyGPT(ModelTest):
        def make_model(self) -> nn.Module:
            return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2))

        def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
            return {"input_ids": torch.randint(0, 100, (batch_size, 7))}

The class holds the factories, hooks and tolerances; the checks themselves are plain
functions in _checks_*.py that take the test instance. Skip a check with a reason through
``skip_checks = {"compile": "why"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from torchsmith.interfaces import ConfigError

from . import _checks_forward as fwd
from . import _checks_saving as saving
from . import _checks_training as training
from ._harness import projection_loss, rows
from ._outputs import main_tensor

# check name -> the test method that runs it (the names skip_checks and reports use).
CHECK_METHODS: dict[str, str] = {
    "forward": "test_forward",
    "eval_deterministic": "test_eval_deterministic",
    "batching": "test_batching_equivalence",
    "gradients": "test_gradients_reach_every_parameter",
    "safetensors": "test_safetensors_round_trip",
    "fresh_process": "test_fresh_process_load",
    "dropout": "test_dropout_off_in_eval",
    "device_move": "test_device_move",
    "bf16": "test_bf16_autocast",
    "compile": "test_compile_matches_eager",
    "gradient_checkpointing": "test_gradient_checkpointing",
    "optimizer_step": "test_optimizer_step_lowers_loss",
    "parameter_count": "test_parameter_count",
    "inplace_inputs": "test_inputs_not_modified_in_place",
}
CHECK_OF_METHOD = {method: check for check, method in CHECK_METHODS.items()}


class ModelTest:
    """Base class of a model's test suite; subclass it as ``class TestX(ModelTest)``.

    Required: ``make_model()`` and ``make_inputs(batch_size)`` (keyword arguments of forward).
    Optional hooks: ``output_of``, ``loss_of``, ``expected_output_shape``, ``select_row``,
    ``enable_gradient_checkpointing``, ``make_optimizer``. Attributes below set tolerances.
    """

    batch_size: ClassVar[int] = 3
    # Which dimension of the main output is the batch (None: no batch dimension).
    batch_dim: ClassVar[int | None] = 0
    seed: ClassVar[int] = 0
    # The exact number of parameter elements (tied ones once); None skips the check.
    expected_num_parameters: ClassVar[int | None] = None
    # check name -> reason, e.g. {"compile": "uses a custom CUDA kernel"}.
    skip_checks: ClassVar[dict[str, str]] = {}
    # Comparisons of the same computation (batching, checkpointing): None = by dtype.
    rtol: ClassVar[float | None] = None
    atol: ClassVar[float | None] = None
    # bf16 autocast vs fp32: relative L2 error ||bf16 - fp32|| / ||fp32|| at most this.
    bf16_tolerance: ClassVar[float] = 0.05
    compile_backend: ClassVar[str] = "inductor"
    compile_rtol: ClassVar[float] = 1e-3
    compile_atol: ClassVar[float] = 1e-4
    # cudnn and cuBLAS may use TF32 and other reduction orders than the CPU.
    device_move_rtol: ClassVar[float] = 1e-3
    device_move_atol: ClassVar[float] = 1e-3
    learning_rate: ClassVar[float] = 1e-3
    fresh_process_timeout: ClassVar[float] = 300.0

    # ------------------------------------------------------------ factories (required)

    def make_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement make_model()")

    def make_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement make_inputs()")

    # ------------------------------------------------------------ hooks (optional)

    def output_of(self, output: Any) -> torch.Tensor:
        """The main tensor of the output: itself, ``.logits``, ``.last_hidden_state``, ..."""
        return main_tensor(output)

    def loss_of(self, output: Any) -> torch.Tensor:
        """A scalar to differentiate: fixed random projections of every output tensor."""
        return projection_loss(output)

    def expected_output_shape(self, batch_size: int) -> tuple[int, ...] | None:
        """The main output's shape for ``batch_size`` rows, or None to check only the batch."""
        return None

    def select_row(self, inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        """Row ``index`` of the inputs for the batching check: by default every tensor whose
        first dimension is ``batch_size`` is sliced, the others are passed unchanged."""
        return rows(inputs, self.batch_size, index)

    def enable_gradient_checkpointing(self, model: nn.Module) -> bool:
        """Turn checkpointing on in ``model``; False where it is unsupported (check skipped)."""
        if not getattr(model, "supports_gradient_checkpointing", True):
            return False
        # transformers >= 5 names it activation_checkpointing_enable; older releases gradient_...
        for name in ("activation_checkpointing_enable", "gradient_checkpointing_enable"):
            enable = getattr(model, name, None)
            if callable(enable):
                enable()
                return True
        return False

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        params = list(params)
        # Adam's eps of 1e-8 is 0 in fp16: an element with a zero gradient would step by
        # 0/0 = NaN, which the check would blame on the model.
        fp16 = any(p.dtype == torch.float16 for p in params)
        return torch.optim.Adam(params, lr=self.learning_rate, eps=1e-4 if fp16 else 1e-8)

    # ------------------------------------------------------------ the checks

    def test_forward(self, device: torch.device) -> None:
        """Forward runs, returns the declared shape, and every output is finite."""
        self._check("forward", fwd.check_forward, device)

    def test_eval_deterministic(self, device: torch.device) -> None:
        """Two eval-mode passes agree; eval updates no buffer."""
        self._check("eval_deterministic", fwd.check_eval_deterministic, device)

    def test_batching_equivalence(self, device: torch.device) -> None:
        """Each row alone equals that row of the batch."""
        self._check("batching", fwd.check_batching, device)

    def test_gradients_reach_every_parameter(self, device: torch.device) -> None:
        """Every trainable parameter gets a finite, non-zero gradient."""
        self._check("gradients", training.check_gradients, device)

    def test_safetensors_round_trip(self, device: torch.device, tmp_checkpoint_dir: Path) -> None:
        """Save to safetensors, load into a new model: identical outputs."""
        self._check("safetensors", saving.check_safetensors, device, tmp_checkpoint_dir)

    @pytest.mark.slow
    def test_fresh_process_load(self, device: torch.device, tmp_checkpoint_dir: Path) -> None:
        """Save here, load in a new Python process: identical outputs (slow: imports torch)."""
        self._check("fresh_process", saving.check_fresh_process, device, tmp_checkpoint_dir)

    def test_dropout_off_in_eval(self, device: torch.device) -> None:
        """Eval output ignores the RNG; train output uses it where dropout exists."""
        self._check("dropout", fwd.check_dropout, device)

    @pytest.mark.requires_cuda
    def test_device_move(self, device: torch.device) -> None:
        """cpu -> cuda -> cpu gives close outputs."""
        self._check("device_move", training.check_device_move, device)

    @pytest.mark.requires_bf16
    def test_bf16_autocast(self, device: torch.device) -> None:
        """bf16 autocast stays within bf16_tolerance of fp32."""
        self._check("bf16", training.check_bf16, device)

    @pytest.mark.slow
    def test_compile_matches_eager(self, device: torch.device) -> None:
        """torch.compile gives the eager output (slow: run with --run-slow)."""
        self._check("compile", training.check_compile, device)

    def test_gradient_checkpointing(self, device: torch.device) -> None:
        """Checkpointing, where supported, gives the same gradients."""
        self._check("gradient_checkpointing", training.check_gradient_checkpointing, device)

    def test_optimizer_step_lowers_loss(self, device: torch.device) -> None:
        """One optimizer step on a fixed batch lowers the loss."""
        self._check("optimizer_step", training.check_optimizer_step, device)

    def test_parameter_count(self, device: torch.device) -> None:
        """The parameter count equals expected_num_parameters."""
        if self.expected_num_parameters is None and "parameter_count" not in self.skip_checks:
            pytest.skip("no expected_num_parameters declared in the test class")
        self._check("parameter_count", fwd.check_parameter_count, device)

    def test_inputs_not_modified_in_place(self, device: torch.device) -> None:
        """Forward leaves its inputs untouched."""
        self._check("inplace_inputs", fwd.check_inplace_inputs, device)

    # ------------------------------------------------------------ plumbing

    def _check(self, name: str, check: Callable[..., None], *args: Any) -> None:
        unknown = set(self.skip_checks) - set(CHECK_METHODS)
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}.skip_checks names unknown check(s) {sorted(unknown)}; "
                f"the checks are: {', '.join(CHECK_METHODS)}"
            )
        if name in self.skip_checks:
            pytest.skip(f"{name} skipped by {type(self).__name__}: {self.skip_checks[name]}")
        device = torch.device(args[0])
        check(self, device, *args[1:])
