"""Evaluation: item-weighted metrics over held-out data, early stopping, and text sampling."""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchsmith.interfaces import ConfigError

from ._data import move_to
from ._datasets import Tokenizer
from ._distributed import Dist, all_reduce_sum, gather_objects
from ._metrics import RunningMean, perplexity
from ._rng import python_and_numpy_kept
from ._tasks import TaskFn

# A user metric: (model, batch, task output) -> the batch's mean value, weighted by num_items.
MetricFn = Callable[[nn.Module, Any, Any], "float | torch.Tensor"]
# Run after each evaluation (text sampling): (model, step) -> text for the eval event.
EvalHook = Callable[[nn.Module, int], str]


@dataclass
class Evaluation:
    """The held-out data and how a run evaluates on it: :func:`evaluate` with these
    settings, then each hook, whose text goes with the ``eval`` event."""

    data: Iterable[Any]
    max_batches: int | None = None
    metrics: dict[str, MetricFn] = field(default_factory=dict)
    perplexity: bool = False  # val_perplexity, for language models
    seed: int = 0  # seeds the evaluation's own randomness (contrastive views), per batch
    hooks: list[EvalHook] = field(default_factory=list)

    def run(
        self,
        model: nn.Module,
        task: TaskFn,
        *,
        device: torch.device | str | None = None,
        autocast: contextlib.AbstractContextManager[Any] | None = None,
        dist: Dist | None = None,
    ) -> dict[str, float]:
        """``val_*`` of ``model`` on :attr:`data` (see :func:`evaluate`)."""
        return evaluate(
            model,
            task,
            self.data,
            max_batches=self.max_batches,
            device=device,
            autocast=autocast,
            seed=self.seed,
            perplexity_of_loss=self.perplexity,
            metrics=self.metrics,
            dist=dist,
        )

    def notes(self, model: nn.Module, step: int) -> str | None:
        """The hooks' text at ``step``, one per line (None without hooks)."""
        return "\n".join(hook(model, step) for hook in self.hooks) or None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: TaskFn,
    data: Iterable[Any],
    *,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    seed: int = 0,
    perplexity_of_loss: bool = False,
    metrics: Mapping[str, MetricFn] | None = None,
    dist: Dist | None = None,
) -> dict[str, float]:
    """``val_loss`` and ``val_<metric>`` averaged over items, and with
    ``perplexity_of_loss=True`` (language models) ``val_perplexity``: exp of the mean token
    NLL, the task's ``nll`` metric, else of ``val_loss``.

    ``device``: where batches go (None: left where the loader puts them).

    ``metrics`` adds user callables ``fn(model, batch, output)``, averaged the same way.
    Under DDP (``dist``) rank ``r`` evaluates batches ``r, r + world, ...`` and the sums
    are reduced, so every rank returns the numbers one process would, for 1/world the work.

    The model is put in eval mode and restored, also when the task raises. Any randomness
    the task uses (contrastive views) comes from a forked RNG seeded per batch from
    (``seed``, the batch's index), so evaluating never moves the training RNG (Python's and
    NumPy's, which a dataset or metric may draw from, are restored too), every
    evaluation sees the same views, and under DDP a rank draws for its batches what one
    process would.
    """
    device = torch.device(device) if device is not None else None
    was_training = model.training
    model.eval()
    means = RunningMean()
    # manual_seed reseeds the GPUs too: fork this process's GPU with the CPU generator.
    gpus = []
    if device is not None and device.type == "cuda":
        gpus = [torch.cuda.current_device() if device.index is None else device.index]
    # A validation set read in this process (no workers) may draw from Python's or NumPy's
    # generators too, as may a metric: they are training's, and kept for it as torch's are.
    forked = torch.random.fork_rng(devices=gpus)
    with forked, python_and_numpy_kept(), _restoring_mode(model, was_training):
        rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
        for index, batch in enumerate(data):
            if max_batches is not None and index >= max_batches:
                break
            if index % world != rank:
                continue
            torch.manual_seed(seed * 1_000_003 + index)
            if device is not None and device.type != "cpu":
                batch = move_to(batch, device, non_blocking=True)
            with autocast or contextlib.nullcontext():
                out = task(model, batch)
            extra = {
                name: metric_value(f"eval.metrics.{name}", fn(model, batch, out))
                for name, fn in (metrics or {}).items()
            }
            if out.loss_weight is None:
                means.update({"loss": out.loss, **out.metrics, **extra}, out.num_items)
            else:  # a weighted mean loss counts by its weight, the metrics by items
                means.add("loss", out.loss, out.loss_weight)
                means.update({**out.metrics, **extra}, out.num_items)
    if dist is not None and dist.enabled:
        _reduce(means, dist, device)
    result = {f"val_{k}": v for k, v in means.compute().items()}
    # exp of the mean token NLL (CausalLMTask's "nll"), or of the loss for a task without it
    nll = result.get("val_nll", result.get("val_loss"))
    if perplexity_of_loss and nll is not None:
        result["val_perplexity"] = perplexity(nll)
    return result


@contextlib.contextmanager
def _restoring_mode(model: nn.Module, training: bool) -> Iterator[None]:
    try:
        yield
    finally:
        model.train(training)


def metric_value(field: str, value: Any) -> float | torch.Tensor:
    """A user metric's value for one batch (its mean: a number or a one-element tensor), or
    a ConfigError naming ``field`` and what came instead."""
    if isinstance(value, torch.Tensor):
        real = value.dtype != torch.bool and not value.is_complex()
        if value.numel() == 1 and real:
            return value.reshape(())  # an integer one too: RunningMean averages in float
        got = f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)  # numpy's scalars too
    else:
        got = type(value).__name__
    raise ConfigError(
        f"{field}: must return the batch's mean as a real number or a one-element real "
        f"tensor, got {got}"
    )


def _reduce(means: RunningMean, dist: Dist, device: torch.device | None) -> None:
    """Sum every rank's item-weighted sums and item counts into ``means``, on every rank.

    A rank may have seen no batch (fewer batches than ranks), so the names are agreed first.
    """
    names = sorted({n for names in gather_objects(sorted(means.sums), dist) for n in names})
    local = [float(means.items)]
    local += [float(means.sums.get(n, 0.0)) for n in names]
    local += [float(means.counts.get(n, 0)) for n in names]
    packed = torch.tensor(local, dtype=torch.float64, device=device)
    total = all_reduce_sum(packed, dist).cpu().tolist()
    sums, counts = total[1 : 1 + len(names)], total[1 + len(names) :]
    means.items = int(total[0])
    means.sums = dict(zip(names, sums, strict=True))
    means.counts = dict(zip(names, counts, strict=True))


@dataclass
class EarlyStopping:
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience``
    evaluations. A NaN or infinite value is never an improvement (nor the best so far)."""

    metric: str
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "min"
    best: float | None = None
    bad_evals: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode: 'min' or 'max', not {self.mode!r}")
        if self.patience < 1:
            raise ValueError(f"patience: at least 1 evaluation, not {self.patience}")
        if not self.min_delta >= 0:  # NaN too: no value would ever improve on the best
            raise ValueError(f"min_delta: 0 or more, not {self.min_delta}")

    def update(self, metrics: dict[str, float]) -> bool:
        """Record one evaluation; True when training should stop. A value that is missing
        (a task that reports the metric on some evaluations only), NaN or infinite is no
        improvement."""
        value = metrics.get(self.metric, float("nan"))
        if self.metric not in metrics:
            warnings.warn(
                f"eval.early_stopping_metric: {self.metric!r} was not measured at this "
                f"evaluation (it reported {sorted(metrics)}); counted as no improvement",
                stacklevel=2,
            )
        improved = math.isfinite(value) and (
            self.best is None
            or (
                value < self.best - self.min_delta
                if self.mode == "min"
                else value > self.best + self.min_delta
            )
        )
        if improved:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return self.stopped

    @property
    def stopped(self) -> bool:
        """Whether the evaluations so far say stop (a run resumed after its stop stays stopped)."""
        return self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """The best value so far and the evaluations since it improved, and of what."""
        return {
            "best": self.best,
            "bad_evals": self.bad_evals,
            "metric": self.metric,
            "mode": self.mode,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave; a state of another metric or mode (the run
        resumed watching something else) is not taken: counting starts afresh, with a warning.
        A state saved before it named them (2026-11-27) is taken as this one's."""
        was = (state.get("metric", self.metric), state.get("mode", self.mode))
        if was != (self.metric, self.mode):
            warnings.warn(
                f"early stopping now watches {self.metric!r} ({self.mode}) but the checkpoint's "
                f"best is of {was[0]!r} ({was[1]}): patience counts afresh from here",
                stacklevel=2,
            )
            self.best, self.bad_evals = None, 0
            return
        best = state["best"]  # a NaN best (saved before NaN was refused) is no best at all
        self.best = None if best is None or not math.isfinite(best) else float(best)
        self.bad_evals = int(state["bad_evals"])


@torch.no_grad()
def generate(
    model: nn.Module,
    tokens: torch.Tensor,
    max_new_tokens: int,
    *,
    block_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Extend ``tokens`` (B, T) by sampling ``max_new_tokens`` from ``model``'s logits;
    with ``vocab_size``, only ids below it (a model's vocabulary may be padded beyond its
    tokenizer's, and an id the tokenizer lacks cannot be decoded).

    A FloatingPointError when the logits hold NaN or +inf (a diverged model): there is no
    distribution to sample from (one check a token, a host sync on a GPU)."""
    _check_sampling(temperature, top_k)
    for i in range(max_new_tokens):
        context = tokens[:, -block_size:]
        logits = model(context)[:, -1, :vocab_size].float()  # (B, vocab)
        probs = next_token_probs(logits, temperature, top_k)
        if probs.isnan().any():  # -inf logits are fine (probability 0); NaN or +inf are not
            raise FloatingPointError(f"the model's next-token logits are NaN or inf (token {i})")
        nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        tokens = torch.cat([tokens, nxt.to(tokens.device)], dim=1)
    return tokens


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """The distribution :func:`generate` samples from: ``logits`` (B, vocab) divided by
    ``temperature``, all but the ``top_k`` largest masked (ties with the k-th kept), softmax."""
    # Shifted so the largest is 0 before dividing: a tiny temperature then gives -inf
    # for the rest (greedy), never inf - inf = NaN. A temperature below the smallest normal
    # number of the dtype the division runs in (float32 at least: half types divide in it)
    # would become 0 there (0 / 0 = NaN for the largest): that number is as greedy as it gets.
    divides_in = torch.promote_types(logits.dtype, torch.float32)
    temperature = max(temperature, torch.finfo(divides_in).tiny)
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


def _check_sampling(temperature: float, top_k: int | None) -> None:
    if not temperature > 0:  # 0 would divide by zero; greedy is a tiny temperature or top_k=1
        raise ValueError(f"temperature: above 0, not {temperature}; for greedy, use top_k=1")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: at least 1 (or None for all), not {top_k}")


@dataclass
class TextSampler:
    """An evaluation hook: text sampled from a language model, from its own seeded generator."""

    tokenizer: Tokenizer
    block_size: int
    num_tokens: int = 200
    prompt: str = "\n"
    temperature: float = 0.8
    top_k: int | None = 20
    seed: int = 0

    def __post_init__(self) -> None:
        # Checked now: a prompt the tokenizer cannot encode fails before training, not after.
        _check_sampling(self.temperature, self.top_k)
        self._prompt_tokens = self.tokenizer.encode(self.prompt) or [0]

    def __call__(self, model: nn.Module, step: int) -> str:
        device = next(model.parameters()).device
        start = torch.tensor([self._prompt_tokens], dtype=torch.int64, device=device)
        generator = torch.Generator(device=device).manual_seed(self.seed + step)
        with _restoring_mode(model, model.training):
            model.eval()
            try:
                out = generate(
                    model,
                    start,
                    self.num_tokens,
                    block_size=self.block_size,
                    temperature=self.temperature,
                    top_k=self.top_k,
                    generator=generator,
                    vocab_size=self.tokenizer.vocab_size,
                )
            except FloatingPointError as exc:  # a display hook must not end the run before
                # its evaluation is logged and saved, where the metrics show the divergence
                warnings.warn(f"text sampling at step {step}: {exc}; no sample", stacklevel=2)
                return ""
        return self.tokenizer.decode(out[0].tolist())
