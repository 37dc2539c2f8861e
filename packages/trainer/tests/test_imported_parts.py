"""``kind = "import"`` for data and task: a user's own datasets and task, named by import
path in a config."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchsmith.interfaces import ConfigError, DataError
from torchsmith.trainer import train

BUILDERS = """
import random

import numpy as np
import torch
from torch.utils.data import IterableDataset, TensorDataset


def blobs(n=320, features=3, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, features, generator=g)
    cut = n * 3 // 4
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


def one_set():
    return TensorDataset(torch.zeros(8, 3))


class Stream(IterableDataset):
    def __iter__(self):
        yield from range(8)


def streams():
    return Stream(), Stream()


def tokens(n=64, block=8, vocab=11):
    x = torch.randint(0, vocab, (n, block + 1), generator=torch.Generator().manual_seed(0))
    return TensorDataset(x[:48, :-1], x[:48, 1:]), TensorDataset(x[48:, :-1], x[48:, 1:])


def lines(n=320):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.05 * torch.randn(n, generator=g)
    return TensorDataset(x[:240], y[:240]), TensorDataset(x[240:], y[240:])


def linear(features=3):
    return torch.nn.Linear(features, 1)


def frozen(features=3):
    model = torch.nn.Linear(features, 3)
    model.requires_grad_(False)  # a pretrained backbone, frozen whole by mistake
    return model


class Regression:
    def __init__(self, scale=1.0):
        self.scale = scale

    def __call__(self, model, batch):
        from torchsmith.interfaces import TaskOutput

        x, y = batch
        pred = model(x).squeeze(-1)
        loss = torch.nn.functional.mse_loss(pred, y) * self.scale
        metrics = {} if model.training else {"mae": (pred - y).abs().mean()}
        return TaskOutput(loss, y.shape[0], metrics)


class WithCriterion(Regression):
    def __init__(self):
        super().__init__()
        self.criterion = torch.nn.Linear(1, 1)  # parameters the trainer would not see


class WithHeads(Regression):
    def __init__(self):
        super().__init__()
        self.heads = [torch.nn.Linear(1, 1)]  # in a list: not seen by the trainer either


class Locked(Regression):
    def __init__(self):
        super().__init__()
        import threading

        self.lock = threading.Lock()  # cannot be copied


class FirstEvaluationOnly(Regression):
    # Reports mae at its first evaluation's batches only (3 batches of 32: 80 examples).

    def __init__(self):
        super().__init__()
        self.eval_batches = 0

    def __call__(self, model, batch):
        out = super().__call__(model, batch)
        if not model.training:
            self.eval_batches += 1
            if self.eval_batches > 3:
                out.metrics.clear()
        return out


def not_a_task():
    return 3


def float_task():
    return lambda model, batch: 1.0


class PerExample(Regression):  # reduction="none": a loss per example, not their mean
    def __call__(self, model, batch):
        out = super().__call__(model, batch)
        out.loss = (model(batch[0]).squeeze(-1) - batch[1]) ** 2
        return out


class CountAsList(Regression):  # a count of shape (1,): DDP's all-reduce would refuse it
    def __call__(self, model, batch):
        out = super().__call__(model, batch)
        out.num_items = torch.tensor([out.num_items])
        return out


class WeightAsList(Regression):  # what the loss's mean divides by, given as a list
    def __call__(self, model, batch):
        out = super().__call__(model, batch)
        out.loss_weight = [float(out.num_items)]
        return out


class Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def train_dicts():
    train, val = blobs()
    return Items([{"x": x, "y": y} for x, y in train]), val


def ragged():
    train, _ = blobs()
    return train, Items([(torch.zeros(1 + i % 2), torch.tensor(0)) for i in range(4)])


def simclr(noise=0.1):
    from torchsmith.trainer import ContrastiveTask

    return ContrastiveTask(augment=lambda x: x + noise * torch.randn_like(x))


def empty_val():
    return TensorDataset(torch.zeros(8, 3)), TensorDataset(torch.zeros(0, 3))


class Noisy(Items):
    # Noise from Python's and NumPy's global generators, as many users' datasets draw it.

    def __getitem__(self, i):
        x, y = self.items[i]
        return x + random.gauss(0, 0.1) + float(np.random.normal(0, 0.1)), y


def noisy_blobs():
    train, val = blobs()
    return Noisy(train), Noisy(val)


SIZE = 320  # the test changes it: a dataset that grows while the config stays the same


def growing():
    return blobs(n=SIZE)
"""


@pytest.fixture
def builders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "my_blobs.py").write_text(BUILDERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_blobs"
    sys.modules.pop("my_blobs", None)


def _overrides(target: str, *more: str) -> list[str]:
    return [
        "data={kind: import, target: '" + target + "'}",
        "model={in_features: 3, hidden: [16], num_classes: 3}",
        "task.top_k=[1, 2]",
        "training.max_steps=60",
        "eval.every_steps=20",
        "checkpoint.every_steps=20",
        *more,
    ]


def _whole_and_resumed(overrides: list[str], tmp_path: Path, stop: int) -> dict[str, float]:
    """Train once whole, once stopped at ``stop`` and resumed; assert the two end the same
    (metrics, and the weights byte for byte); the metrics."""
    whole = train("digits-classifier", overrides=overrides, out_dir=tmp_path / "whole")
    split = tmp_path / "split"
    train("digits-classifier", overrides=overrides, out_dir=split, max_steps=stop)
    resumed = train("digits-classifier", overrides=overrides, out_dir=split, resume="latest")
    assert resumed == whole
    model = Path("checkpoints", "latest", "model.safetensors")
    assert (split / model).read_bytes() == (tmp_path / "whole" / model).read_bytes()
    return whole


def test_imported_data_trains_and_resumes_bitwise(builders: str, tmp_path: Path) -> None:
    whole = _whole_and_resumed(_overrides(f"{builders}:blobs"), tmp_path, stop=30)
    assert whole["val_accuracy"] > 0.9 and "val_top2_accuracy" in whole


def test_evaluating_leaves_python_and_numpy_randomness_to_training(
    builders: str, tmp_path: Path
) -> None:
    """A dataset drawing from ``random`` and ``np.random`` (no workers: in this process). The
    run stopped at 25 evaluates there, between its evaluations every 20; had that moved those
    generators, the resumed run would draw other noise from step 26 on."""
    _whole_and_resumed(_overrides(f"{builders}:noisy_blobs"), tmp_path, stop=25)


def test_a_resume_onto_a_dataset_that_grew_is_refused_naming_the_checkpoint(
    builders: str, tmp_path: Path
) -> None:
    """The config is the same, so only the saved data position can tell: its batches count
    over 240 training examples, and 300 would start elsewhere in the epoch."""
    overrides = _overrides(f"{builders}:growing")
    train("digits-classifier", overrides=overrides, out_dir=tmp_path, max_steps=20)
    sys.modules[builders].SIZE = 400
    message = (
        r"^cannot resume from .*step-00000020: the data position was counted over 240 "
        r"examples in batches of 32, and this data has 300 in batches of 32"
    )
    with pytest.raises(DataError, match=message):
        train("digits-classifier", overrides=overrides, out_dir=tmp_path, resume="latest")


def test_a_resume_onto_other_data_kwargs_is_refused(builders: str, tmp_path: Path) -> None:
    target = f"{builders}:blobs"
    train("digits-classifier", overrides=_overrides(target), out_dir=tmp_path, max_steps=20)
    other = _overrides(target, "data.kwargs={seed: 1}")
    with pytest.raises(ConfigError, match=r"data.kwargs"):
        train("digits-classifier", overrides=other, out_dir=tmp_path, resume="latest")


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("no_such_module:build", "",
         r"data.target: cannot import .* add the module's folder to PYTHONPATH"),
        ("{m}:one_set", "",
         r"data.target: 'my_blobs:one_set' returned TensorDataset, not \(train, val\)"),
        ("{m}:streams", "",
         r"data.target: the train set .* is a Stream; give a map-style dataset"),
        ("{m}:empty_val", "",
         r"data.target: the val set 'my_blobs:empty_val' returned is empty"),
        ("{m}:blobs", "data.kwargs={colour: red}",
         r"data.kwargs: my_blobs:blobs\(\*\*\{'colour': 'red'\}\) failed: TypeError"),
    ],
)  # fmt: skip
def test_a_data_builder_that_does_not_fit_fails_naming_the_field(
    builders: str, tmp_path: Path, target: str, kwargs: str, message: str
) -> None:
    overrides = _overrides(target.format(m=builders), *([kwargs] if kwargs else []))
    with pytest.raises(ConfigError, match=message):
        train("digits-classifier", overrides=overrides, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # failed before any work


def test_every_task_takes_imported_data() -> None:
    from torchsmith.trainer import validate_config

    data = {"kind": "import", "target": "a:b"}
    for task, model in [("classification", "mlp"), ("clip", "clip"), ("causal_lm", "gpt")]:
        config = validate_config({"task": {"kind": task}, "model": {"kind": model}, "data": data})
        assert config.data.kind == "import"
    # The contrastive task a config builds draws digit views: a builder gives it others.
    with pytest.raises(ConfigError, match=r"ContrastiveTask\(augment=your_views\) as task"):
        validate_config(
            {"task": {"kind": "contrastive"}, "model": {"kind": "encoder"}, "data": data}
        )


def test_contrastive_learning_on_imported_data_takes_its_views_from_a_task_builder(
    builders: str, tmp_path: Path
) -> None:
    overrides = [
        "task={kind: import, target: '" + builders + ":simclr'}",
        "data={kind: import, target: '" + builders + ":blobs'}",
        "model.in_features=3",
        "training.max_steps=30",
        "checkpoint.metric=val_loss",
    ]
    done = train("simclr-digits", overrides=overrides, out_dir=tmp_path)
    assert done["step"] == 30 and "val_pair_accuracy" in done


def test_a_language_model_on_imported_tokens(builders: str, tmp_path: Path) -> None:
    lm = [
        "task.kind=causal_lm",
        "data={kind: import, target: '" + builders + ":tokens'}",
        "model={kind: gpt, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16}",
        "training.max_steps=5",
        "schedule.warmup_steps=0",
        "eval.sample_tokens=0",
        "loader.batch_size=8",
    ]
    with pytest.raises(ConfigError, match=r"model\.vocab_size: required when the data has no"):
        train("char-gpt", overrides=lm, out_dir=tmp_path / "a")
    with pytest.warns(UserWarning, match=r"eval\.sample_tokens: 40, but imported data has no"):
        done = train("char-gpt", overrides=[*lm, "model.vocab_size=11", "eval.sample_tokens=40"],
                     out_dir=tmp_path / "b")  # fmt: skip
    assert done["step"] == 5 and "val_perplexity" in done


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ("train_dicts", r"data\.target: the data of 'my_blobs:train_dicts', with a 'mlp' model, "
                        r"fails on a classification task's training batch before training: "
                        r"DataError: classification expects batches of \(inputs, targets\), "
                        r"got dict"),
        ("ragged", r"data\.target: the first validation examples cannot be read into a batch: "
                   r"RuntimeError: stack expects each tensor to be equal size"),
    ],
)  # fmt: skip
def test_data_that_does_not_fit_the_task_is_named(
    builders: str, tmp_path: Path, builder: str, message: str
) -> None:
    """Training items unlike validation's, validation items that do not stack: both found
    before training, naming data.target, with nothing written."""
    overrides = _overrides(f"{builders}:{builder}")
    with pytest.raises(ConfigError, match=message):
        train("digits-classifier", overrides=overrides, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _regression(builders: str, *more: str) -> list[str]:
    return [
        "task={kind: import, target: '" + builders + ":Regression'}",
        "data={kind: import, target: '" + builders + ":lines'}",
        "model={kind: import, target: '" + builders + ":linear'}",
        "training.max_steps=120",
        "optim.lr=0.05",
        "eval.every_steps=20",
        "checkpoint.every_steps=20",
        "checkpoint.metric=val_loss",
        *more,
    ]


def test_a_model_with_nothing_to_train_is_refused(builders: str, tmp_path: Path) -> None:
    """Every parameter frozen: the run would step an empty optimizer and learn nothing."""
    overrides = _overrides(f"{builders}:blobs", "model={kind: import, target: 'my_blobs:frozen'}")
    with pytest.raises(ConfigError, match=r"^model: no parameter .* requires grad"):
        train("digits-classifier", overrides=overrides, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_imported_task_trains_stops_early_and_resumes_bitwise(
    builders: str, tmp_path: Path
) -> None:
    """Regression, which no built-in task does: the task, data and model all imported."""
    stop = ["eval.early_stopping_metric=val_mae", "eval.patience=2", "eval.min_delta=0.5"]
    whole = train("digits-classifier", overrides=_regression(builders, *stop),
                  out_dir=tmp_path / "whole")  # fmt: skip
    assert whole["val_mae"] < 0.5 and whole["step"] < 120  # learnt (from about 1.8), stopped
    split = tmp_path / "split"
    train("digits-classifier", overrides=_regression(builders, *stop), out_dir=split,
          max_steps=40)  # fmt: skip
    assert train("digits-classifier", overrides=_regression(builders, *stop), out_dir=split,
                 resume="latest") == whole  # fmt: skip
    model = Path("checkpoints", "latest", "model.safetensors")
    assert (split / model).read_bytes() == (tmp_path / "whole" / model).read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["task={kind: import}"],
         r"task\.target: an 'import' task names its builder"),
        (["task={kind: classification, target: 'a:b'}"],
         r"task\.target: only an 'import' task takes one, not a classification task"),
        (["task={kind: import, target: 'a:b', loss: mse}"],
         r"task\.loss: an 'import' task brings its own loss"),
        (["task={kind: import, target: '{m}:WithCriterion'}"],
         r"task\.target: the task 'my_blobs:WithCriterion' holds \['criterion'\]; the trainer "
         r"trains, saves and restores a task's parameters and buffers only in its `loss`"),
        (["task={kind: import, target: '{m}:WithHeads'}"],
         r"task\.target: the task 'my_blobs:WithHeads' holds \['heads'\]"),
        (["task={kind: import, target: '{m}:linear'}"],
         r"task\.target: the task 'my_blobs:linear' itself a Module"),
        (["task={kind: import, target: '{m}:Locked'}"],
         r"task\.target: the task 'my_blobs:Locked' cannot be copied \(TypeError"),
        (["task={kind: import, target: 'my_blobs.Regression:__call__'}"],
         r"task\.target: cannot import"),
        (["task={kind: import, target: '{m}:not_a_task'}"],
         r"task\.target: 'my_blobs:not_a_task' returned int, not a task"),
        (["task={kind: import, target: '{m}:float_task'}"],
         r"task\.target: the task of 'my_blobs:float_task' returned float, not a TaskOutput"),
        (["task={kind: import, target: '{m}:PerExample'}"],
         r"task\.target: the task of 'my_blobs:PerExample' returned a loss of shape \(2,\); "
         r"the trainer needs the batch's mean loss, a tensor of one element"),
        (["task={kind: import, target: '{m}:CountAsList'}"],
         r"task\.target: the task of 'my_blobs:CountAsList' returned num_items of shape "
         r"\(1,\); the trainer needs the batch's item count, an int or a 0-dim tensor"),
        (["task={kind: import, target: '{m}:WeightAsList'}"],
         r"task\.target: the task of 'my_blobs:WeightAsList' returned loss_weight of .*list.*; "
         r"the trainer needs what the loss's mean divides by, a number or a 0-dim tensor"),
        (["task={kind: import, target: '{m}:Regression', kwargs: {size: 2}}"],
         r"task\.kwargs: my_blobs:Regression\(\*\*\{'size': 2\}\) failed: TypeError"),
        (["eval.early_stopping_metric=val_accuracy"],
         r"eval\.early_stopping_metric: 'val_accuracy' is not a metric the task 'my_blobs:"
         r"Regression' reports in evaluation \(allowed: val_loss, val_mae\)"),
        (["eval.metrics={mae: 'builtins:abs'}"],
         r"eval\.metrics: 'mae' is a metric the task 'my_blobs:Regression' reports already"),
    ],
)  # fmt: skip
def test_an_imported_task_that_does_not_fit_fails_naming_the_field(
    builders: str, tmp_path: Path, change: list[str], message: str
) -> None:
    overrides = _regression(builders, *(c.replace("{m}", builders) for c in change))
    with pytest.raises(ConfigError, match=message):
        train("digits-classifier", overrides=overrides, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_evaluation_replaces_the_last_ones_metrics(builders: str, tmp_path: Path) -> None:
    """A metric the task no longer reports is not carried over from an earlier evaluation:
    a checkpoint (and keep-best) holds only what was measured at its step."""
    task = ["task={kind: import, target: '" + builders + ":FirstEvaluationOnly'}"]
    done = train("digits-classifier", overrides=_regression(builders, *task, "loader.batch_size=32",
                 "training.max_steps=40"), out_dir=tmp_path)  # fmt: skip
    assert "val_mae" not in done and "val_loss" in done
    meta = (tmp_path / "checkpoints" / "step-00000040" / "meta.json").read_text()
    assert '"val_mae"' not in meta
    first = (tmp_path / "checkpoints" / "step-00000020" / "meta.json").read_text()
    assert '"val_mae"' in first


def test_a_validation_set_of_a_few_examples_is_warned_about(builders: str, tmp_path: Path) -> None:
    overrides = _overrides(f"{builders}:blobs", "data.kwargs={n: 12}", "loader.batch_size=4")
    with pytest.warns(UserWarning, match=r"validation set holds 3 example\(s\), so its metrics"):
        train("digits-classifier", overrides=overrides, out_dir=tmp_path, max_steps=2)
