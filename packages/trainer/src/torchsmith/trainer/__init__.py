"""torchsmith.trainer

A thin, fast, composable PyTorch training loop: AMP, accumulation, exact resume, DDP.

    from torchsmith.trainer import train, list_recipes
    metrics = train("digits-classifier", overrides=["optim.lr=1e-3"], out_dir="runs/d")
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-trainer", INTERFACES_MAJOR)

from ._api import list_recipes, load_config, train  # noqa: E402
from ._build import build_data, build_model, build_trainer  # noqa: E402
from ._checkpoint import (  # noqa: E402
    CheckpointManager,
    CheckpointMismatchError,
    load_checkpoint,
    load_model_state,
)
from ._config import (  # noqa: E402
    CheckpointConfig,
    EvalConfig,
    ExperimentConfig,
    LoaderConfig,
    OptimConfig,
    ScheduleConfig,
    TaskConfig,
    TrainingConfig,
)
from ._config_files import apply_overrides, validate_config  # noqa: E402
from ._data import (  # noqa: E402
    BatchSeeded,
    BatchStream,
    Gathered,
    ResumableSampler,
    build_loader,
    seed_worker,
)
from ._datasets import Tokenizer, digits, text_corpus  # noqa: E402
from ._evaluate import EarlyStopping, Evaluation, TextSampler, evaluate, generate  # noqa: E402
from ._events import CallbackSink, EventBus, JsonlSink, ListSink, RichProgressSink  # noqa: E402
from ._losses import clip_loss, ntxent, resolve_loss  # noqa: E402
from ._metrics import RunningMean, perplexity, top_k_accuracy  # noqa: E402
from ._optim import build_optimizer, build_scheduler, lr_factor, parameter_groups  # noqa: E402
from ._rng import rng_state, seed_everything, set_rng_state  # noqa: E402
from ._step import NonFiniteLossError, Stepper  # noqa: E402
from ._tasks import CausalLMTask, ClassificationTask, CLIPTask, ContrastiveTask  # noqa: E402
from ._trainer import Schedule, Trainer  # noqa: E402

__version__ = _version("torchsmith-trainer")

__all__ = [
    "INTERFACES_MAJOR",
    "__version__",
    # running
    "train",
    "list_recipes",
    "load_config",
    "build_trainer",
    "build_data",
    "build_model",
    # config
    "ExperimentConfig",
    "LoaderConfig",
    "TaskConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "EvalConfig",
    "CheckpointConfig",
    "apply_overrides",
    "validate_config",
    # the loop and its parts
    "Trainer",
    "Schedule",
    "Stepper",
    "NonFiniteLossError",
    "build_optimizer",
    "build_scheduler",
    "parameter_groups",
    "lr_factor",
    # tasks and losses
    "ClassificationTask",
    "ContrastiveTask",
    "CLIPTask",
    "CausalLMTask",
    "resolve_loss",
    "ntxent",
    "clip_loss",
    # data
    "ResumableSampler",
    "BatchStream",
    "BatchSeeded",
    "Gathered",
    "build_loader",
    "seed_worker",
    "digits",
    "text_corpus",
    "Tokenizer",
    # evaluation and metrics
    "evaluate",
    "Evaluation",
    "EarlyStopping",
    "TextSampler",
    "generate",
    "RunningMean",
    "top_k_accuracy",
    "perplexity",
    # checkpoints and RNG
    "CheckpointManager",
    "CheckpointMismatchError",
    "load_checkpoint",
    "load_model_state",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    # events
    "EventBus",
    "JsonlSink",
    "RichProgressSink",
    "CallbackSink",
    "ListSink",
]
