"""Protocols for the roles that vary and cross package boundaries.

They are structural: an ``nn.Module`` is a :class:`Model`, any callable that
returns a tensor is a :class:`Loss`, a plain function with the right signature
is an :class:`EventSink`'s ``emit``. Nothing here imports torch at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from ._records import GeneratedArtifact, TrainingEvent


@runtime_checkable
class DataSource(Protocol):
    """An iterable of batches; one pass over it is one epoch."""

    def __iter__(self) -> Iterator[Any]: ...


@runtime_checkable
class Model(Protocol):
    """What the suites need of a model; every ``torch.nn.Module`` satisfies it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


@runtime_checkable
class Loss(Protocol):
    """A callable from predictions (and targets) to a scalar loss tensor."""

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor: ...


@dataclass
class TaskOutput:
    """What a Task returns for one micro-batch.

    ``loss`` is the mean over the ``num_items`` items it covers (examples, or
    tokens for language modelling). The trainer weights each micro-batch by
    ``num_items`` so gradient accumulation equals one large batch. Since 1.4
    ``num_items`` may be a 0-dim integer tensor: a count made on the device (the
    target tokens that are not padding) costs no host sync.

    ``loss_weight`` (since 1.5) is what the loss's mean divides by when that is not
    ``num_items``: a class-weighted cross-entropy's total target weight. The trainer then
    weighs the loss by it and the metrics, still means over items, by ``num_items``.
    """

    loss: torch.Tensor
    num_items: int | torch.Tensor
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)
    loss_weight: float | torch.Tensor | None = None

    @property
    def weight(self) -> int | float | torch.Tensor:
        """The loss's weight among micro-batches: ``loss_weight``, or else ``num_items``."""
        return self.num_items if self.loss_weight is None else self.loss_weight


@runtime_checkable
class Task(Protocol):
    """Turns one batch into a loss and metrics; the only part that differs per kind of training."""

    def __call__(self, model: Model, batch: Any) -> TaskOutput: ...


@runtime_checkable
class EventSink(Protocol):
    """Receives training events (a logger, a progress bar, a WebSocket)."""

    def emit(self, event: TrainingEvent) -> None: ...


@runtime_checkable
class Evaluator(Protocol):
    """Computes metrics of a model over data, without changing it."""

    def evaluate(self, model: Model, data: DataSource) -> dict[str, float]: ...


@runtime_checkable
class Checkpointer(Protocol):
    """Saves and restores training state atomically."""

    def save(
        self, state: Mapping[str, Any], *, step: int, metrics: Mapping[str, float]
    ) -> Path: ...
    def load(self, path: Path | None = None) -> dict[str, Any] | None: ...
    def latest(self) -> Path | None: ...


@runtime_checkable
class Trainer(Protocol):
    """Runs training to completion and returns the final metrics."""

    def fit(self) -> dict[str, float]: ...


@runtime_checkable
class BenchmarkCase(Protocol):
    """A named piece of work to time, for each combination of ``params``.

    ``setup`` does the untimed preparation and returns the callable to time.
    """

    name: str
    params: Mapping[str, list[Any]]

    def setup(self, **params: Any) -> Callable[[], object]: ...


@runtime_checkable
class ModelGenerator(Protocol):
    """Writes model code for a spec into a directory."""

    def families(self) -> list[str]: ...
    def generate(
        self, spec: Mapping[str, Any], out_dir: Path, *, backend: str = "cpu"
    ) -> GeneratedArtifact: ...
