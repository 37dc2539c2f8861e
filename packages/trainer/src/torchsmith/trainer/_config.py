"""The experiment config's sections: pydantic models, validated before any work starts.

Every section has ``extra="forbid"``, so a misspelt key fails with one
:class:`ConfigError` naming the field and the values it accepts (``_config_files``
loads files and overrides and words the errors). Models, data and tasks are tagged unions
on ``kind``.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    # allow_inf_nan=False: ``gt``/``ge`` bounds let ``.inf`` through, and an infinite lr
    # or weight decay would pass here and turn the loss into NaN a few steps in.
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, data: Any) -> Any:
        """pydantic reads ``true`` as 1 for a number (``batch_size = true`` would train with
        batches of one) and 1 or ``"yes"`` as true for a flag: a boolean, alone or in a
        list, is refused where no bool is taken, and a flag takes true or false only."""
        for name, value in data.items() if isinstance(data, dict) else ():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None:
                continue
            leaves = _leaf_types(field.annotation)
            if leaves & {int, float} and not leaves & {bool, Any} and _holds_bool(value):
                raise ValueError(f"{name}: a number, not a boolean; got {value!r}")
            flag = bool in leaves and leaves <= {bool, type(None)}
            if flag and not isinstance(value, bool) and value is not None:
                raise ValueError(f"{name}: true or false; got {value!r}")
        return data


def _holds_bool(value: Any) -> bool:
    """Whether ``value`` is a bool or a list (of lists...) holding one; iterative, since a
    pasted value may be nested deeper than Python recurses."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, bool):
            return True
        if isinstance(item, (list, tuple)):
            todo.extend(item)
    return False


def _leaf_types(annotation: Any) -> set[Any]:
    """The types a field of this type takes, through lists, unions and Annotated."""
    leaves, todo = set(), [annotation]
    while todo:
        kind = todo.pop()
        args = typing.get_args(kind)
        if typing.get_origin(kind) is Annotated:
            todo.append(args[0])
        elif args and typing.get_origin(kind) is not Literal:
            todo.extend(args)
        else:
            leaves.add(kind)
    return leaves


# ---------------------------------------------------------------- model


class MLPConfig(_Section):
    """A multilayer perceptron classifier (the digits baseline)."""

    kind: Literal["mlp"] = "mlp"
    in_features: int = Field(default=64, gt=0)
    hidden: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [128])
    num_classes: int = Field(default=10, gt=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class EncoderConfig(_Section):
    """An MLP encoder with a projection head, for contrastive pre-training."""

    kind: Literal["encoder"] = "encoder"
    in_features: int = Field(default=64, gt=0)
    hidden: int = Field(default=128, gt=0)
    projection: int = Field(default=32, gt=0)


class GPTConfig(_Section):
    """A small decoder-only transformer (nanoGPT shaped)."""

    kind: Literal["gpt"] = "gpt"
    vocab_size: int | None = Field(default=None, description="None: taken from the tokenizer.")
    block_size: int = Field(default=64, gt=0)
    n_layer: int = Field(default=2, gt=0)
    n_head: int = Field(default=4, gt=0)
    n_embd: int = Field(default=64, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTConfig:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd: {self.n_embd} is not divisible by model.n_head ({self.n_head}), "
                "so the heads cannot split the width"
            )
        return self


class CLIPConfig(_Section):
    """A tiny image-text dual encoder."""

    kind: Literal["clip"] = "clip"
    image_features: int = Field(default=64, gt=0)
    vocab_size: int = Field(default=256, gt=0)
    embed_dim: int = Field(default=32, gt=0)
    hidden: int = Field(default=64, gt=0)


class ImportedModelConfig(_Section):
    """Any model builder named by import path, ``"package.module:function"``."""

    kind: Literal["import"] = "import"
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


ModelConfig = Annotated[
    MLPConfig | EncoderConfig | GPTConfig | CLIPConfig | ImportedModelConfig,
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------- data


class DigitsDataConfig(_Section):
    """scikit-learn's bundled 8x8 digits (1797 images), split into train and validation."""

    kind: Literal["digits"] = "digits"
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    captions: bool = Field(default=False, description="Yield (image, caption tokens) pairs.")


def _no_nul(path: str) -> str:
    if "\x00" in path:  # the OS cannot open it: Python raises a bare ValueError at the first use
        raise ValueError(f"{path!r} holds a NUL character, which no file path may")
    return path


PathText = Annotated[str, AfterValidator(_no_nul)]


class TextDataConfig(_Section):
    """Markdown or text files read into one token stream, cut into blocks."""

    kind: Literal["text"] = "text"
    paths: list[PathText] = Field(
        default_factory=list, description="Files or directories; empty: the shipped corpus."
    )
    tokenizer: Literal["char", "byte"] = "char"
    block_size: int = Field(default=64, gt=0)
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)


class ImportedDataConfig(_Section):
    """Your own data, from a builder named by import path: ``target(**kwargs)`` returns
    ``(train, val)``, two map-style datasets (``len`` and ``[i]``) of what the task reads."""

    kind: Literal["import"] = "import"
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


DataConfig = Annotated[
    DigitsDataConfig | TextDataConfig | ImportedDataConfig, Field(discriminator="kind")
]


class LoaderConfig(_Section):
    """How batches are read: sizes, DataLoader workers, shuffling (order = f(seed, epoch))."""

    batch_size: int = Field(default=32, gt=0, description="Per process, per micro-batch.")
    eval_batch_size: int | None = Field(default=None, gt=0)
    # At most 512: a mistyped count would fork processes until the machine gives out.
    num_workers: int = Field(default=0, ge=0, le=512, description="Per training process.")
    prefetch_factor: int | None = Field(
        default=None, gt=0, description="Batches each worker loads ahead; None: torch's 2."
    )
    shuffle: bool = True

    @model_validator(mode="after")
    def _prefetch_needs_workers(self) -> LoaderConfig:
        if self.prefetch_factor == 2 and self.num_workers == 0:
            self.prefetch_factor = None  # torch's default: configs of earlier versions hold it
        if self.prefetch_factor is not None and self.num_workers == 0:
            raise ValueError(
                f"prefetch_factor: {self.prefetch_factor} needs loader.num_workers > 0 (with "
                "none, batches are read when the loop asks); set it to null or add workers"
            )
        return self


# ---------------------------------------------------------------- task


class TaskConfig(_Section):
    """What a batch trains: the task's kind, its loss by name (and arguments), top-k; or,
    with ``kind = "import"``, a task of your own from a builder named by import path."""

    kind: Literal["classification", "contrastive", "clip", "causal_lm", "import"] = "classification"
    loss: str | None = Field(default=None, description="A torchsmith-losses name; None: default.")
    loss_kwargs: dict[str, Any] = Field(default_factory=dict)
    top_k: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1, 5])
    target: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:[\w.]+$",
        description="'import': 'package.module:builder'; builder(**kwargs) returns the task.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _import_names_its_builder(self) -> TaskConfig:
        if self.kind == "import" and self.target is None:
            raise ValueError(
                "target: an 'import' task names its builder, 'package.module:function'"
            )
        if self.kind != "import" and (self.target is not None or self.kwargs):
            raise ValueError(f"target: only an 'import' task takes one, not a {self.kind} task")
        if self.kind == "import" and (self.loss or self.loss_kwargs):
            raise ValueError(
                "loss: an 'import' task brings its own loss; pass its settings in task.kwargs"
            )
        return self


# ---------------------------------------------------------------- optimization


_Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class OptimConfig(_Section):
    """The optimizer by name, its settings, and which parameters skip weight decay."""

    name: Literal["adamw", "adam", "sgd", "rmsprop"] = "adamw"
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    betas: tuple[_Beta, _Beta] = (0.9, 0.999)
    momentum: float = Field(default=0.9, ge=0.0)
    eps: float = Field(default=1e-8, gt=0.0)
    no_decay_norms_and_biases: bool = True
    fused: bool | None = Field(
        default=None,
        description="torch's fused kernel (adamw, adam, sgd): None uses it where torch has "
        "one for the parameters' device, false never.",
    )

    @model_validator(mode="after")
    def _fused_exists(self) -> OptimConfig:
        if self.fused and self.name == "rmsprop":
            raise ValueError(
                "fused: rmsprop has no fused kernel; set optim.fused to null or false, or "
                "optim.name to adamw, adam or sgd"
            )
        return self


class ScheduleConfig(_Section):
    """The LR schedule over ``training.max_steps``: warmup, then the named shape."""

    name: Literal["constant", "linear", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    step_size: int = Field(default=100, gt=0, description="'step': decay every this many steps.")
    gamma: float = Field(default=0.1, gt=0.0, description="'step': decay factor.")


class TrainingConfig(_Section):
    """The loop: length, accumulation, clipping, precision, device, compile, NaN policy, logs."""

    max_steps: int = Field(default=200, gt=0, description="Optimizer steps; the LR horizon.")
    stop_after: int | None = Field(
        default=None, gt=0, description="Stop early at this step (--max-steps); keeps the LR plan."
    )
    grad_accum: int = Field(default=1, gt=0)
    clip_grad_norm: float | None = Field(default=None, gt=0.0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    nonfinite: Literal["error", "skip"] = "error"
    nonfinite_check: Literal["auto", "step", "window"] = Field(
        default="auto",
        description="When a NaN/Inf loss is looked for: every micro-batch ('step', a host sync "
        "on CUDA) or at the loop's next log/eval/save ('window', error policy only); 'auto' "
        "is 'window' on CUDA (under DDP too) and 'step' otherwise.",
    )
    log_every: int = Field(default=10, gt=0)


class EvalConfig(_Section):
    """When to evaluate, extra metrics, early stopping, and text sampling for LMs."""

    every_steps: int | None = Field(default=None, gt=0)
    every_epochs: int | None = Field(default=None, gt=0)
    metrics: dict[str, str] = Field(
        default_factory=dict, description='name -> "pkg.module:fn", fn(model, batch, output)'
    )
    max_batches: int | None = Field(default=None, gt=0)
    early_stopping_metric: str | None = None
    patience: int = Field(default=3, gt=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    mode: Literal["min", "max"] = "min"
    sample_tokens: int = Field(default=0, ge=0, description="LM: characters sampled per eval.")
    sample_prompt: str = "\n"
    temperature: float = Field(default=0.8, gt=0.0)
    top_k: int | None = Field(default=20, gt=0)


class CheckpointConfig(_Section):
    """When to save, and which checkpoints to keep: the last N, the best N."""

    every_steps: int | None = Field(default=None, gt=0)
    keep_last: int = Field(default=2, gt=0)
    keep_best: int = Field(default=0, ge=0)
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"


DIGIT_FEATURES, DIGIT_CLASSES = 64, 10
CAPTION_VOCAB = 123  # the captions ("the digit seven") are bytes, 'z' (122) the largest
# task.kind: the data kind it trains on and the built-in model kind it trains.
_FITS = {
    "classification": ("digits", "mlp"),
    "contrastive": ("digits", "encoder"),
    "clip": ("digits", "clip"),
    "causal_lm": ("text", "gpt"),
}


class ExperimentConfig(_Section):
    """One training run: what to train, on what, how, and where to write."""

    name: str = Field(default="experiment", pattern=r"^[\w.-]+$")
    seed: int = Field(default=0, ge=0, lt=2**32)  # numpy's seeds; the sampler's fit int64
    out_dir: PathText = Field(default="runs/experiment", min_length=1)  # "" (an unset $OUT): no
    model: ModelConfig = Field(default_factory=MLPConfig)
    data: DataConfig = Field(default_factory=DigitsDataConfig)
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        # Overriding model.hidden alone should refine the default MLP, not lose its tag.
        if isinstance(data, dict):
            for section, kind in (("model", "mlp"), ("data", "digits")):
                value = data.get(section)
                if isinstance(value, dict) and "kind" not in value:
                    data = {**data, section: {"kind": kind, **value}}
        return data

    @model_validator(mode="after")
    def _fields_agree(self) -> ExperimentConfig:
        # Each of these would otherwise fail (or silently do nothing) after training started.
        problems = []
        tr = self.training
        if tr.stop_after is not None and tr.stop_after > tr.max_steps:
            problems.append(
                f"training.stop_after (--max-steps): {tr.stop_after} is beyond "
                f"training.max_steps {tr.max_steps}, where the run and its LR schedule end; "
                f"to train {tr.stop_after} steps, --set training.max_steps={tr.stop_after}"
            )
        if (
            isinstance(self.data, TextDataConfig)
            and isinstance(self.model, GPTConfig)
            and self.data.block_size > self.model.block_size
        ):
            problems.append(
                f"data.block_size: {self.data.block_size} is longer than model.block_size "
                f"{self.model.block_size}, the longest sequence the model takes; set "
                f"data.block_size <= {self.model.block_size} or "
                f"model.block_size >= {self.data.block_size}"
            )
        problems += self._kinds_fit()
        if tr.nonfinite_check == "window" and tr.nonfinite == "skip":
            problems.append(
                "training.nonfinite_check: 'window' cannot skip a bad step after it was taken; "
                "use 'step' or 'auto' with training.nonfinite='skip'"
            )
        ev = self.eval
        if ev.early_stopping_metric is not None and not (ev.every_steps or ev.every_epochs):
            problems.append(
                f"eval.early_stopping_metric: {ev.early_stopping_metric!r} is never measured "
                "during training (eval.every_steps and eval.every_epochs are both unset), so "
                "nothing could stop early; set one of them"
            )
        built_in = {name.removeprefix("val_") for name in eval_metric_names(self, user=False)}
        for clash in sorted(built_in & ev.metrics.keys()):
            problems.append(
                f"eval.metrics: {clash!r} is a built-in metric of a {self.task.kind} task "
                f"(val_{clash}); a user metric under that name would replace it silently, so "
                "give it another name"
            )
        ck = self.checkpoint
        if ck.keep_best and ck.metric == "train_loss" and (ck.every_steps or 0) % tr.log_every:
            problems.append(
                f"checkpoint.metric: 'train_loss' is the mean over each training.log_every "
                f"({tr.log_every}) steps, and a checkpoint between logs has none, so keep-best "
                f"could not rank checkpoint.every_steps ({ck.every_steps}); make it a multiple"
            )
        produced = eval_metric_names(self)
        wanted = [("eval.early_stopping_metric", self.eval.early_stopping_metric, produced)]
        wanted.append(("checkpoint.metric", self.checkpoint.metric, ["train_loss", *produced]))
        if self.task.kind == "import":  # its metrics are known once it runs (the preflight)
            wanted = []
        for where, name, allowed in wanted:
            if name is not None and name not in allowed:
                problems.append(
                    f"{where}: {name!r} is not a metric a {self.task.kind} run produces "
                    f"(allowed: {', '.join(sorted(allowed))})"
                )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def _kinds_fit(self) -> list[str]:
        """Task, data and model that cannot train together (they would fail at step 1)."""
        task, data, model = self.task.kind, self.data, self.model
        # An imported task may train any data and model; its own first batch will tell.
        wanted_data, wanted_model = _FITS.get(task, (data.kind, model.kind))
        problems = []
        if data.kind not in (wanted_data, "import"):
            problems.append(
                f"data.kind: a {task} task trains on {wanted_data!r} (or 'import' data), "
                f"not {data.kind!r}"
            )
        if model.kind not in (wanted_model, "import"):
            problems.append(
                f"model.kind: a {task} task trains a {wanted_model!r} model (or an 'import' "
                f"one), not {model.kind!r}"
            )
        if task == "clip" and isinstance(data, DigitsDataConfig) and not data.captions:
            problems.append("data.captions: a clip task needs image-caption pairs; set it true")
        if task == "contrastive" and data.kind == "import":
            problems.append(
                "data.kind: the contrastive task a config builds draws 8x8 digit views; for "
                "your own data, name a builder returning ContrastiveTask(augment=your_views) "
                "as task.target (task.kind = 'import')"
            )
        digit_captions = isinstance(data, DigitsDataConfig)
        if digit_captions and isinstance(model, CLIPConfig) and model.vocab_size < CAPTION_VOCAB:
            problems.append(
                f"model.vocab_size: the digit captions are bytes up to {CAPTION_VOCAB - 1} "
                f"('z'), so it must be at least {CAPTION_VOCAB}, not {model.vocab_size}"
            )
        width = getattr(model, "image_features", getattr(model, "in_features", DIGIT_FEATURES))
        if isinstance(data, DigitsDataConfig) and width != DIGIT_FEATURES:
            field = "image_features" if isinstance(model, CLIPConfig) else "in_features"
            problems.append(f"model.{field}: digits are {DIGIT_FEATURES} pixels, not {width}")
        classes = model.num_classes if isinstance(model, MLPConfig) else DIGIT_CLASSES
        if isinstance(data, DigitsDataConfig) and classes < DIGIT_CLASSES:
            problems.append(
                f"model.num_classes: digits have {DIGIT_CLASSES} classes, more than {classes}"
            )
        return problems


def eval_metric_names(config: ExperimentConfig, user: bool = True) -> list[str]:
    """The names :func:`~torchsmith.trainer.evaluate` reports for ``config``'s task.

    ``val_loss``; the task's metrics (classification: ``val_accuracy`` and
    ``val_top{k}_accuracy`` for each k up to the number of classes, when it is known);
    ``val_nll`` and ``val_perplexity`` for language models; with ``user``, one
    ``val_<name>`` per ``eval.metrics``. An imported task's own metrics are not among them:
    the preflight reads them off its first validation batch.
    """
    kind, names = config.task.kind, ["loss", *(config.eval.metrics if user else ())]
    if kind == "classification":
        classes = config.model.num_classes if isinstance(config.model, MLPConfig) else None
        ks = {k for k in config.task.top_k if k > 1 and (classes is None or k <= classes)}
        names += ["accuracy", *(f"top{k}_accuracy" for k in sorted(ks))]
    elif kind == "causal_lm":
        names += ["accuracy", "nll", "perplexity"]
    elif kind == "contrastive":
        names.append("pair_accuracy")
    elif kind == "clip":
        names.append("retrieval_accuracy")  # an imported task's own are known when it runs
    return [f"val_{name}" for name in names]
