"""Builders: from a validated ExperimentConfig to the parts, and the parts to a Trainer.

Each builder wires objects it is handed or makes one part; nothing here trains.
"""

from __future__ import annotations

import hashlib
import importlib
import platform
import warnings
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from torchsmith.interfaces import ConfigError, DataError, EventSink

from . import _models
from ._checkpoint import CheckpointManager
from ._config import (
    CLIPConfig,
    DigitsDataConfig,
    EncoderConfig,
    ExperimentConfig,
    GPTConfig,
    ImportedDataConfig,
    ImportedModelConfig,
    MLPConfig,
    ModelConfig,
    TextDataConfig,
)
from ._config_checks import plan_warnings
from ._data import BatchStream, ResumableSampler, build_loader, dataset_length
from ._datasets import TokenBlocks, Tokenizer, digits, shipped_corpus, text_corpus
from ._distributed import Dist, barrier, init_distributed, wrap_ddp
from ._evaluate import EarlyStopping, EvalHook, Evaluation, TextSampler
from ._model_size import check_fits
from ._optim import build_optimizer, build_scheduler
from ._preflight import preflight
from ._rng import seed_everything
from ._step import Stepper
from ._tasks import TaskFn, build_task
from ._trainer import Schedule, Trainer


@dataclass
class Data:
    """A run's datasets, and the tokenizer of a text corpus (None for digits)."""

    train: Dataset[Any]
    val: Dataset[Any]
    tokenizer: Tokenizer | None = None


def resolve_device(config: ExperimentConfig) -> torch.device:
    """The device to train on; fp16 and 'cuda' without CUDA fail here, before any work."""
    wanted = config.training.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: 'cuda' was asked for but CUDA is not available")
    if config.training.precision == "fp16" and wanted != "cuda":
        raise ConfigError(
            "training.precision: 'fp16' needs CUDA (a GradScaler on GPU); use 'bf16' or 'fp32' "
            "on CPU (allowed here: 'fp32', 'bf16')"
        )
    return torch.device(wanted)


def build_data(config: ExperimentConfig, base_dir: Path | None = None) -> Data:
    """The train and validation datasets named by ``config.data``."""
    data = config.data
    if isinstance(data, DigitsDataConfig):
        train, val = digits(data.val_fraction, seed=config.seed, captions=data.captions)
        return Data(train, val)
    if isinstance(data, ImportedDataConfig):
        return _import_data(data)
    paths = [_relative(Path(p), base_dir) for p in data.paths] or shipped_corpus()
    train_blocks, val_blocks, tokenizer = text_corpus(
        paths, data.tokenizer, data.block_size, data.val_fraction
    )
    return Data(train_blocks, val_blocks, tokenizer)


def _relative(path: Path, base_dir: Path | None) -> Path:
    return path if path.is_absolute() or base_dir is None else base_dir / path


def build_model(config: ExperimentConfig, tokenizer: Tokenizer | None = None) -> nn.Module:
    """The model named by ``config.model`` (built-in kinds, or any builder by import path).

    A built-in model too big for this machine's memory, counted before it is built, or
    one torch cannot allocate, is a ConfigError naming ``model``.
    """
    m = config.model
    if isinstance(m, ImportedModelConfig):
        return _import_model(m)
    vocab = None
    if isinstance(m, GPTConfig):
        vocab = m.vocab_size or (tokenizer.vocab_size if tokenizer else None)
        if vocab is None:
            raise ConfigError("model.vocab_size: required when the data has no tokenizer")
        if tokenizer is not None and vocab < tokenizer.vocab_size:
            raise ConfigError(
                f"model.vocab_size: {vocab} is fewer than the tokenizer's "
                f"{tokenizer.vocab_size} tokens; leave it unset to take the tokenizer's"
            )
    check_fits(m, vocab)
    try:
        return _builtin_model(m, vocab)
    except (RuntimeError, MemoryError) as exc:  # a size the allocator refuses
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"model: cannot build the {m.kind!r} model: {type(exc).__name__}: {first_line}"
        ) from exc


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    try:
        return model.to(device)
    except torch.OutOfMemoryError as exc:
        count = sum(p.numel() for p in model.parameters())
        raise ConfigError(
            f"model: {count:.3g} parameters do not fit on {device}: {str(exc).splitlines()[0]}"
        ) from exc


def _builtin_model(m: ModelConfig, vocab: int | None) -> nn.Module:
    if isinstance(m, MLPConfig):
        return _models.mlp(m.in_features, m.hidden, m.num_classes, m.dropout)
    if isinstance(m, EncoderConfig):
        return _models.Encoder(m.in_features, m.hidden, m.projection)
    if isinstance(m, GPTConfig):
        assert vocab is not None  # build_model checked it
        return _models.GPT(vocab, m.block_size, m.n_layer, m.n_head, m.n_embd, m.dropout)
    assert isinstance(m, CLIPConfig)
    return _models.DualEncoder(m.image_features, m.vocab_size, m.embed_dim, m.hidden)


def import_callable(target: str, field: str) -> Any:
    """The object at ``"package.module:name"``, or a ConfigError naming ``field``."""
    module_name, sep, attr = target.partition(":")
    try:
        if not sep:
            raise ImportError("expected 'package.module:name'")
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        hint = ""
        if isinstance(exc, ModuleNotFoundError):
            hint = "; install its package, or add the module's folder to PYTHONPATH"
        raise ConfigError(f"{field}: cannot import {target!r}: {exc}{hint}") from exc
    except Exception as exc:  # the module itself failed: a SyntaxError, an error at import
        raise ConfigError(
            f"{field}: importing {target!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(found):
        raise ConfigError(f"{field}: {target!r} is not callable")
    return found


def _built(section: str, target: str, kwargs: dict[str, Any]) -> Any:
    """``target(**kwargs)`` for config ``section`` (an ``import`` model, data or task); a
    ConfigError naming ``section.target`` or ``section.kwargs`` when it fails."""
    build = import_callable(target, f"{section}.target")
    try:
        return build(**kwargs)
    except Exception as exc:  # wrong or missing kwargs, or the builder's own refusal
        raise ConfigError(
            f"{section}.kwargs: {target}(**{kwargs}) failed: {type(exc).__name__}: {exc}"
        ) from exc


def _import_model(m: ImportedModelConfig) -> nn.Module:
    model = _built("model", m.target, m.kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.target: {m.target!r} returned {type(model).__name__}, not a Module"
        )
    return model


def _import_data(d: ImportedDataConfig) -> Data:
    made = _built("data", d.target, d.kwargs)
    if not (isinstance(made, tuple | list) and len(made) == 2):
        raise ConfigError(
            f"data.target: {d.target!r} returned {type(made).__name__}, not (train, val) datasets"
        )
    for name, dataset in zip(("train", "val"), made, strict=True):
        if isinstance(dataset, IterableDataset) or not (
            isinstance(dataset, Sized) and hasattr(dataset, "__getitem__")
        ):
            raise ConfigError(
                f"data.target: the {name} set {d.target!r} returned is a "
                f"{type(dataset).__name__}; give a map-style dataset (len and [i]), which the "
                "resumable sampler can index"
            )
        try:
            size = len(dataset)
        except Exception as exc:
            raise ConfigError(
                f"data.target: len() of the {name} set {d.target!r} returned failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if size == 0:
            raise ConfigError(f"data.target: the {name} set {d.target!r} returned is empty")
    return Data(made[0], made[1])


def _holds_module(value: Any) -> bool:
    """A module, or a list, tuple, set or dict with one in it (one level down)."""
    if isinstance(value, list | tuple | set | dict):
        items = value.values() if isinstance(value, dict) else value
        return any(isinstance(item, nn.Module) for item in items)
    return isinstance(value, nn.Module)


def build_config_task(config: ExperimentConfig) -> TaskFn:
    """The task of ``config.task``; its loss is reachable as ``task.loss``."""
    t = config.task
    if t.kind == "import":
        return _import_task(str(t.target), t.kwargs)
    clip_model = isinstance(config.model, CLIPConfig)  # DualEncoder returns its logit scale
    return build_task(t.kind, t.loss, t.loss_kwargs, t.top_k, model_scale=clip_model)


def _import_task(target: str, kwargs: dict[str, Any]) -> TaskFn:
    task = _built("task", target, kwargs)
    if isinstance(task, type) or not callable(task):
        made = f"the class {task.__name__}" if isinstance(task, type) else type(task).__name__
        raise ConfigError(
            f"task.target: {target!r} returned {made}, not a task: a callable "
            "(model, batch) -> TaskOutput (return an instance)"
        )
    modules = [name for name, v in getattr(task, "__dict__", {}).items() if _holds_module(v)]
    if isinstance(task, nn.Module) or set(modules) - {"loss"}:
        held = "itself a Module" if isinstance(task, nn.Module) else f"holds {modules}"
        raise ConfigError(
            f"task.target: the task {target!r} {held}; the trainer trains, saves and restores "
            "a task's parameters and buffers only in its `loss` attribute, so keep them there"
        )
    return task  # type: ignore[no-any-return]


def add_loss_parameters(optimizer: torch.optim.Optimizer, loss: nn.Module) -> None:
    """The loss module's trainable parameters as one more group, without weight decay.

    A learnable temperature is a scalar like a norm gain: decaying it only pulls it to 0.
    No group is added for a loss without parameters, so the optimizer's state layout
    (and old checkpoints) stay as they were.
    """
    params = [p for p in loss.parameters() if p.requires_grad]
    if params:
        optimizer.add_param_group({"params": params, "weight_decay": 0.0})


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("torchsmith-trainer", "torchsmith-interfaces", "torchsmith-losses"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return versions


FEW_VALIDATION_EXAMPLES = 10  # fewer, and a run warns that its validation numbers are noise


def build_trainer(
    config: ExperimentConfig,
    *,
    sinks: Iterable[EventSink] = (),
    base_dir: Path | None = None,
    dist: Dist | None = None,
) -> Trainer:
    """Every part of a run, wired: seed, data, model, task, optimizer, loop, checkpoints."""
    device = resolve_device(config)
    seed_everything(config.seed)  # task, data and weights: the same on every rank
    task = build_config_task(config)  # a bad task.loss fails here, before any data is read
    info = dist or init_distributed(device.type)
    for message in plan_warnings(config) if info.is_main else ():
        warnings.warn(message, UserWarning, stacklevel=2)
    data = build_data(config, base_dir)  # a builder's random split: one split for all ranks
    val_size = dataset_length(data.val)
    if info.is_main and val_size < FEW_VALIDATION_EXAMPLES:
        warnings.warn(
            f"data: the validation set holds {val_size} example(s), so its metrics "
            "(and early stopping or keep-best on them) are mostly noise",
            UserWarning,
            stacklevel=2,
        )
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = _on_device(build_model(config, data.tokenizer), device)
    loss = getattr(task, "loss", None)
    if isinstance(loss, nn.Module):  # a learnable temperature, a memory bank
        loss.to(device)
    ev, ck = config.eval, config.checkpoint
    metrics = {
        name: import_callable(target, f"eval.metrics.{name}") for name, target in ev.metrics.items()
    }
    preflight(config, model, task, data.val, device, metrics, train=data.train)  # RNGs kept
    seed_everything(config.seed + info.rank)  # from here each rank draws its own
    optimizer = build_optimizer(model, config.optim)
    if isinstance(loss, nn.Module):
        add_loss_parameters(optimizer, loss)
    if not any(p.requires_grad for group in optimizer.param_groups for p in group["params"]):
        raise ConfigError(
            "model: no parameter of the model (or of task.loss) requires grad, so training "
            "would change nothing; unfreeze the ones to train (requires_grad_(True))"
        )
    tr, loader_cfg = config.training, config.loader
    if tr.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    model = wrap_ddp(model, info, device)
    sampler, loader, val_loader = _loaders(config, data, info, device)
    stepper = Stepper(
        model,
        task,
        optimizer,
        device=device,
        precision=tr.precision,
        clip_grad_norm=tr.clip_grad_norm,
        nonfinite=tr.nonfinite,
        dist=info,
        defer_nonfinite_check={"auto": None, "step": False, "window": True}[tr.nonfinite_check],
        items_per_micro_batch=loader_cfg.batch_size * _tokens_per_example(config, data),
    )
    out_dir = Path(config.out_dir)
    checkpoints = CheckpointManager(
        out_dir / "checkpoints",
        keep_last=ck.keep_last,
        keep_best=ck.keep_best,
        metric=ck.metric,
        mode=ck.mode,
        recover=info.is_main,
    )
    barrier(info)  # the other ranks read checkpoints once rank 0 has recovered them
    return Trainer(
        stepper=stepper,
        data=BatchStream(loader, sampler, seed=config.seed),
        schedule=Schedule(
            max_steps=tr.max_steps,
            stop_after=tr.stop_after,
            grad_accum=tr.grad_accum,
            log_every=tr.log_every,
            eval_every=ev.every_steps,
            checkpoint_every=ck.every_steps,
            eval_every_epochs=ev.every_epochs,
        ),
        scheduler=build_scheduler(optimizer, config.schedule, tr.max_steps),
        evaluation=Evaluation(
            val_loader,
            max_batches=ev.max_batches,
            metrics=metrics,
            perplexity=config.task.kind == "causal_lm",
            seed=config.seed,
            hooks=_eval_hooks(config, data.tokenizer),
        ),
        checkpoints=checkpoints,
        sinks=sinks,
        early_stopping=EarlyStopping(ev.early_stopping_metric, ev.patience, ev.min_delta, ev.mode)
        if ev.early_stopping_metric
        else None,
        items_name="tokens" if config.task.kind == "causal_lm" else "samples",
        samples_per_micro_batch=loader_cfg.batch_size,
        meta={
            "config": config.model_dump(mode="json"),
            "versions": package_versions(),
            **data_fingerprint(data),
        },
        dist=info,
    )


def _loaders(
    config: ExperimentConfig, data: Data, info: Dist, device: torch.device
) -> tuple[ResumableSampler, DataLoader[Any], DataLoader[Any]]:
    """(sampler, training loader, validation loader): this rank's share of each global batch,
    in an order that resumes exactly; validation reads every example in order."""
    loader_cfg = config.loader
    train_size = dataset_length(data.train)
    if train_size < loader_cfg.batch_size * info.world_size:
        split = getattr(config.data, "val_fraction", None)
        kept = f"; data.val_fraction {split} keeps the rest for validation" if split else ""
        raise ConfigError(
            f"loader.batch_size: {loader_cfg.batch_size} x {info.world_size} process(es) is more "
            f"than the {train_size} training examples{kept}, so an epoch has no batch"
        )
    sampler = ResumableSampler(
        train_size,
        loader_cfg.batch_size,
        seed=config.seed,
        shuffle=loader_cfg.shuffle,
        rank=info.rank,
        world_size=info.world_size,
    )
    loader = build_loader(
        data.train,
        loader_cfg.batch_size,
        sampler=sampler,
        num_workers=loader_cfg.num_workers,
        prefetch_factor=loader_cfg.prefetch_factor,
        seed=config.seed,
        pin_memory=device.type == "cuda",
    )
    # The validation loader's own generator leaves the global RNG alone.
    val_loader = build_loader(
        data.val,
        loader_cfg.eval_batch_size or loader_cfg.batch_size,
        seed=config.seed,
        drop_last=False,
    )
    return sampler, loader, val_loader


def data_fingerprint(data: Data) -> dict[str, str]:
    """``{"data_sha256": ...}`` of a text corpus: its vocabulary and every token id, train
    and validation. The config names only the corpus's paths, and a resume must read the
    same text (an edited file shifts a char vocabulary's ids). Digits: nothing, their data
    ships with scikit-learn."""
    if data.tokenizer is None:
        return {}
    digest = hashlib.sha256(f"{data.tokenizer.kind}:{data.tokenizer.chars}".encode())
    for part in (data.train, data.val):
        if isinstance(part, TokenBlocks):
            digest.update(part.tokens.numpy().tobytes())
    return {"data_sha256": digest.hexdigest()}


def _tokens_per_example(config: ExperimentConfig, data: Data) -> int:
    """A language model's loss is a mean over tokens: a block's worth per example (for
    imported data, the targets of its first example)."""
    if config.task.kind != "causal_lm":
        return 1
    if isinstance(config.data, TextDataConfig):
        return config.data.block_size
    example = data.train[0]
    targets = example[1] if isinstance(example, tuple | list) and len(example) == 2 else None
    return max(1, torch.as_tensor(targets).numel()) if targets is not None else 1


def _eval_hooks(config: ExperimentConfig, tokenizer: Tokenizer | None) -> list[EvalHook]:
    ev, model = config.eval, config.model
    if not ev.sample_tokens or tokenizer is None or not isinstance(model, GPTConfig):
        return []
    try:
        sampler = TextSampler(
            tokenizer,
            model.block_size,
            ev.sample_tokens,
            ev.sample_prompt,
            ev.temperature,
            ev.top_k,
            config.seed,
        )
    except DataError as exc:  # the prompt has characters the corpus never uses
        raise ConfigError(f"eval.sample_prompt: {exc}") from exc
    return [sampler]
