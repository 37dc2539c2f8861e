"""Config: TOML/YAML files, --set overrides, and errors that name the field and allowed values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from torchsmith.interfaces import ConfigError
from torchsmith.trainer import (
    apply_overrides,
    build_trainer,
    list_recipes,
    load_config,
    validate_config,
)
from torchsmith.trainer._build import build_data
from torchsmith.trainer._config import (
    CAPTION_VOCAB,
    GPTConfig,
    TextDataConfig,
    eval_metric_names,
)
from torchsmith.trainer._config_checks import plan_warnings, resume_mismatches, resume_warnings
from torchsmith.trainer._config_files import read_config_file
from torchsmith.trainer._datasets import caption_tokens

from .conftest import small_config
from .test_config_text_fuzz import laughs


def test_toml_and_yaml_give_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('seed = 4\n[optim]\nname = "sgd"\nlr = 0.05\n')
    (tmp_path / "a.yaml").write_text("seed: 4\noptim:\n  name: sgd\n  lr: 0.05\n")
    toml, _ = load_config(tmp_path / "a.toml")
    yaml, _ = load_config(tmp_path / "a.yaml")
    assert toml == yaml
    assert toml.optim.name == "sgd" and toml.optim.lr == 0.05 and toml.seed == 4


def test_overrides_parse_values_and_nest() -> None:
    data = apply_overrides(
        {"optim": {"lr": 1.0}}, ["optim.lr=3e-4", "model.hidden=[8, 4]", "training.compile=true"]
    )
    config = validate_config(data)
    assert config.optim.lr == 3e-4
    assert config.model.hidden == [8, 4]  # type: ignore[union-attr]
    assert config.training.compile is True


def test_an_override_with_a_colon_is_text_unless_braced() -> None:
    data = apply_overrides({}, ["eval.sample_prompt=The loop: it", "model.kwargs={a: 1}"])
    assert data["eval"]["sample_prompt"] == "The loop: it"
    assert data["model"]["kwargs"] == {"a": 1}


def test_an_override_refines_the_default_model_kind() -> None:
    assert validate_config(apply_overrides({}, ["model.dropout=0.2"])).model.kind == "mlp"


def test_switching_kind_by_override() -> None:
    kinds = ["model.kind=gpt", "data.kind=text", "task.kind=causal_lm"]
    config = validate_config(apply_overrides({}, kinds))
    assert isinstance(config.model, GPTConfig) and isinstance(config.data, TextDataConfig)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.name=adamx", "optim.name: Input should be 'adamw', 'adam', 'sgd' or 'rmsprop'"),
        ("optim.lrr=1", "optim.lrr: unknown field (allowed: betas, eps, fused, lr,"),
        ("training.precision=fp8", "training.precision: Input should be 'fp32', 'bf16' or 'fp16'"),
        ("loader.batch_size=0", "loader.batch_size: Input should be greater than 0"),
        ("model.kind=resnet", "model.kind: unknown kind 'resnet' (allowed: 'mlp', 'encoder'"),
        ("schedule.name=poly", "schedule.name: Input should be 'constant', 'linear', 'cosine'"),
        ("seed=-1", "seed: Input should be greater than or equal to 0"),
        ("seed=4294967296", "seed: Input should be less than 4294967296"),
        # A section's own check names its field, without pydantic's "Value error," prefix.
        ("model={kind: gpt, n_embd: 10, n_head: 3}", "\n  model.n_embd: 10 is not divisible"),
        ("optim={name: rmsprop, fused: true}", "\n  optim.fused: rmsprop has no fused kernel"),
    ],
)
def test_errors_name_field_and_allowed_values(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(apply_overrides({}, [override]))
    assert expected in str(info.value) and "Value error" not in str(info.value)


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"optim": {"lr": -1}, "training": {"max_steps": 0}})
    assert "optim.lr" in str(info.value) and "training.max_steps" in str(info.value)


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1"])
def test_malformed_overrides(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"section\.field=value"):
        apply_overrides({}, [bad])


def test_override_into_a_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="'seed' is a value"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_unknown_recipe_lists_the_recipes() -> None:
    with pytest.raises(ConfigError, match="recipes: char-gpt, digits-classifier, simclr-digits"):
        load_config("no-such-recipe")


def test_missing_file_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match=r"dir\.toml is a directory, not a file"):
        load_config(tmp_path / "dir.toml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ConfigError, match="suffix must be"):
        load_config(tmp_path / "c.json")
    (tmp_path / "broken.toml").write_text("[optim\n")
    with pytest.raises(ConfigError, match="not valid"):
        load_config(tmp_path / "broken.toml")
    (tmp_path / "latin.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.toml is not UTF-8 \(byte 11\)"):
        load_config(tmp_path / "latin.toml")


def test_config_text_that_cannot_be_held_is_refused_naming_its_place(tmp_path: Path) -> None:
    """Aliases that multiply a few hundred bytes past 100,000 values, a collection that
    holds itself, and nesting deeper than Python recurses are each a short ConfigError."""
    (tmp_path / "laughs.yaml").write_text(laughs(9) + "\n")
    with pytest.raises(ConfigError, match=r"laughs.yaml: the document expands through its "
                       r"aliases to 490,329,064 values, more than 100,000"):  # fmt: skip
        load_config(tmp_path / "laughs.yaml")
    with pytest.raises(ConfigError, match=r"override 'model.hidden=\{l0.*': the value expands"):
        load_config("digits-classifier", [f"model.hidden={laughs(9)}"])
    (tmp_path / "loop.yaml").write_text("seed: 1\nmodel: &m {hidden: *m}\n")
    with pytest.raises(ConfigError, match=r"holds itself through an alias \(the collection at "
                       r"line 2, column 8\)"):  # fmt: skip
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "deep.toml").write_text("seed = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.toml is nested too deeply to read"):
        load_config(tmp_path / "deep.toml")
    with pytest.raises(ConfigError, match="the value is nested too deeply"):
        load_config("digits-classifier", ["seed=" + "[" * 1000 + "]" * 1000])
    # Shared values within the bound are what anchors are for: they still work.
    (tmp_path / "shared.yaml").write_text("model: {hidden: &h [64, 64]}\ntask: {top_k: *h}\n")
    assert load_config(tmp_path / "shared.yaml")[0].task.top_k == [64, 64]  # type: ignore[union-attr]


def test_a_bad_value_is_shown_in_part() -> None:
    """The error shows a few levels and items of a bad value, not all of it."""
    with pytest.raises(ConfigError) as caught:
        load_config("digits-classifier", [f"model.hidden={[list(range(100))] * 100}"])
    assert "model.hidden.0: Input should be a valid integer; got [0, 1, 2, 3, 4, 5, ...]" in str(
        caught.value
    )
    last = "model.hidden.19: Input should be a valid integer; got [0, 1, 2, 3, 4, 5, ...]"
    assert str(caught.value).endswith(f"{last}\n  ... and 80 more errors")
    with pytest.raises(ConfigError, match=r"model.kind: unknown kind 'x{37}\.\.\.x{38}' \(al"):
        load_config("digits-classifier", ["model.kind=" + "x" * 5000])
    # an override that does not read as YAML is text; a file must read
    with pytest.raises(ConfigError, match=r"seed: .*; got '!!timestamp x'"):
        load_config("digits-classifier", ["seed=!!timestamp x"])


def test_a_tag_pyyaml_fails_to_construct_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("seed: !!timestamp x\n")  # PyYAML: AttributeError
    with pytest.raises(ConfigError, match=r"c.yaml is not valid: 'x' is not a timestamp\n.*line 1"):
        load_config(tmp_path / "c.yaml")


def test_integers_past_pythons_digit_limit_are_config_errors(tmp_path: Path) -> None:
    """Python refuses to turn over 4300 decimal digits into an int or back into text."""
    (tmp_path / "a.toml").write_text("seed = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"a.toml is not valid: Exceeds the limit \(4300"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "c.yaml").write_text("seed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"c.yaml: the document holds an integer of 5000 dig"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"the value holds an integer of 5000 digits, more t"):
        load_config("digits-classifier", ["seed=" + "9" * 5000])
    (tmp_path / "b.yaml").write_text("seed: 0x" + "f" * 5000 + "\n")  # hex has no limit
    with pytest.raises(ConfigError, match=r"b.yaml: the document holds an integer of about 602"):
        load_config(tmp_path / "b.yaml")
    # given in Python, such a number is shown by its length
    with pytest.raises(ConfigError, match=r"seed: .*; got <an integer of about 6021 digits>$"):
        validate_config({"seed": 2**20000})


def test_an_unknown_kind_is_shown_as_written() -> None:
    with pytest.raises(ConfigError, match=r"model.kind: unknown kind \['x'\] \(allowed"):
        validate_config({"model": {"kind": ["x"]}})
    with pytest.raises(ConfigError, match=r"data.kind: unknown kind 3 \(allowed"):
        validate_config({"data": {"kind": 3}})


def test_shipped_recipes_validate() -> None:
    assert list_recipes() == ["char-gpt", "digits-classifier", "simclr-digits"]
    for name in list_recipes():
        config, base = load_config(name, ["optim.lr=1e-3"])
        assert config.name == name and config.optim.lr == 1e-3
        assert base is None  # its relative data paths are the user's: the working directory


@given(st.integers(min_value=1, max_value=10**6), st.floats(1e-8, 10.0, allow_nan=False))
def test_override_round_trip(steps: int, lr: float) -> None:
    config = validate_config(
        apply_overrides({}, [f"training.max_steps={steps}", f"optim.lr={lr!r}"])
    )
    assert config.training.max_steps == steps and config.optim.lr == lr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["eval.early_stopping_metric=val_acc", "eval.every_steps=10"],
            "eval.early_stopping_metric: 'val_acc' is not a metric a classification run produces"
            " (allowed: val_accuracy, val_loss, val_top5_accuracy)",
        ),
        (
            ["eval.early_stopping_metric=val_loss"],  # and no periodic evaluation
            "eval.early_stopping_metric: 'val_loss' is never measured during training",
        ),
        (
            ["checkpoint.metric=val_los", "task.top_k=[1, 3, 20]"],  # 20 > 10 classes: none
            "checkpoint.metric: 'val_los' is not a metric a classification run produces"
            " (allowed: train_loss, val_accuracy, val_loss, val_top3_accuracy)",
        ),
        (
            ["task.kind=causal_lm", "model.kind=gpt", "data.kind=text", "data.block_size=65"],
            "data.block_size: 65 is longer than model.block_size 64",
        ),
        (
            ["training.stop_after=31", "training.max_steps=30"],
            "training.stop_after (--max-steps): 31 is beyond training.max_steps 30",
        ),
        (["data.kind=text"],
         "data.kind: a classification task trains on 'digits' (or 'import' data), not 'text'"),
        (
            ["task.kind=causal_lm", "data.kind=text"],
            "model.kind: a causal_lm task trains a 'gpt' model (or an 'import' one), not 'mlp'",
        ),
        (
            ["task.kind=clip", "model.kind=clip"],
            "data.captions: a clip task needs image-caption pairs; set it true",
        ),
        (["model.num_classes=5"], "model.num_classes: digits have 10 classes, more than 5"),
        (["model.in_features=32"], "model.in_features: digits are 64 pixels, not 32"),
        (["optim.betas=[0.9, 1.5]"], "optim.betas.1: Input should be less than 1; got 1.5"),
        (["task.top_k=[0]"], "task.top_k.0: Input should be greater than 0; got 0"),
        (
            ["loader.prefetch_factor=4"],  # torch ignores it, or refuses it, without workers
            "loader.prefetch_factor: 4 needs loader.num_workers > 0",
        ),
        (
            ["checkpoint.keep_best=2", "checkpoint.metric=train_loss",
             "checkpoint.every_steps=5", "training.log_every=10"],
            "checkpoint.metric: 'train_loss' is the mean over each training.log_every (10) steps",
        ),
    ],
)  # fmt: skip
def test_fields_that_must_agree(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(apply_overrides({}, overrides))
    assert str(info.value).startswith(f"invalid config:\n  {expected}")
    assert str(info.value).count("\n") == 1  # one error, naming one field


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["loader.batch_size=2000"], "loader.batch_size: 2000 x 1 process(es) is more than the "
                                     "1438 training examples; data.val_fraction 0.2 keeps"),
        (["model.kind=gpt", "data.kind=text", "task.kind=causal_lm", "model.vocab_size=10"],
         "model.vocab_size: 10 is fewer than the tokenizer's 70 tokens"),
    ],
)  # fmt: skip
def test_what_only_the_data_can_tell_fails_before_training(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    config = validate_config(apply_overrides({"out_dir": str(tmp_path)}, overrides))
    with pytest.raises(ConfigError, match=re.escape(expected)):
        build_trainer(config)
    assert not (tmp_path / "checkpoints").exists()


def test_metric_names_are_what_evaluate_reports(tmp_path: Path) -> None:
    kinds = {
        "classification": {"task": {"kind": "classification", "top_k": [1, 3, 5, 10]}},
        "contrastive": {"task": {"kind": "contrastive"}, "model": {"kind": "encoder"}},
        "clip": {
            "task": {"kind": "clip"},
            "model": {"kind": "clip"},
            "data": {"kind": "digits", "captions": True},
        },
        "causal_lm": {
            "task": {"kind": "causal_lm"},
            "model": {"kind": "gpt", "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
            "data": {"kind": "text", "block_size": 16},
        },
    }
    for kind, sections in kinds.items():
        config = small_config(tmp_path / kind, **sections)
        trainer = build_trainer(config)
        assert trainer.evaluation is not None
        trainer.evaluation.max_batches = 1
        reported = trainer.evaluation.run(
            trainer.stepper.model, trainer.stepper.task, device=trainer.stepper.device
        )
        assert sorted(reported) == sorted(eval_metric_names(config)), kind


def test_relative_data_paths_resolve_against_the_config_file_or_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config file's relative paths are relative to it (a config and its corpus move
    together); a shipped recipe's, given with --set, to where the command runs."""
    for where, text in (("project", "the config's folder. "), ("cwd", "the working directory. ")):
        (tmp_path / where / "corpus").mkdir(parents=True)
        (tmp_path / where / "corpus" / "a.txt").write_text(text * 40)
    kinds = 'model = {kind = "gpt"}\ntask = {kind = "causal_lm"}\n'
    (tmp_path / "project" / "c.toml").write_text(
        kinds + 'data = {kind = "text", paths = ["corpus"], block_size = 32}\n'
    )
    monkeypatch.chdir(tmp_path / "cwd")
    for source, overrides, expected in (
        (tmp_path / "project" / "c.toml", [], "config's folder"),
        ("char-gpt", ['data.paths=["corpus"]', "data.block_size=32"], "working directory"),
    ):
        config, base = load_config(source, overrides)
        data = build_data(config, base)
        assert data.tokenizer is not None
        assert expected in data.tokenizer.decode(data.train.tokens.tolist())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.lr=.inf", "optim.lr"),
        ("optim.weight_decay=.inf", "optim.weight_decay"),
        ("eval.temperature=.inf", "eval.temperature"),
        ("model.hidden=[0]", "model.hidden.0"),
        ("model.hidden=[32, -1]", "model.hidden.1"),
    ],
)
def test_infinite_and_empty_sizes_are_refused(tmp_path: Path, override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: "):
        small_config(tmp_path, override)


def test_a_clip_vocabulary_must_hold_the_caption_bytes(tmp_path: Path) -> None:
    clip = ["task.kind=clip", "data.captions=true"]
    with pytest.raises(ConfigError, match=r"model.vocab_size: .* at least 123, not 50"):
        small_config(tmp_path, *clip, model={"kind": "clip", "vocab_size": 50})
    small_config(tmp_path, *clip, model={"kind": "clip", "vocab_size": CAPTION_VOCAB})
    assert int(caption_tokens(torch.arange(10)).max()) + 1 == CAPTION_VOCAB


def test_a_user_metric_may_not_take_a_built_in_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"eval.metrics: 'loss' is a built-in metric"):
        small_config(tmp_path, "eval.metrics={loss: 'os:getcwd'}")
    lm = ["task.kind=causal_lm", "data.kind=text"]
    with pytest.raises(ConfigError, match=r"eval.metrics: 'perplexity' is a built-in"):
        small_config(tmp_path, *lm, "eval.metrics={perplexity: 'a:b'}", model={"kind": "gpt"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["schedule.warmup_steps=30"], "30 is not below .* reaches only at the last step"),
        (["schedule.warmup_steps=31"], "31 is not below .* the LR never reaches optim.lr"),
        (["schedule.name=step", "schedule.step_size=27"], "the 'step' schedule never decays"),
        (
            ["eval.every_steps=10", "eval.early_stopping_metric=val_loss"],
            "eval.patience: early stopping needs 4 evaluations to stop, .* gives 3",
        ),
    ],
)
def test_a_plan_that_cannot_play_out_is_warned_about(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    """Valid (a smoke run of a long recipe is fair), but the setting does nothing: warned."""
    found = plan_warnings(small_config(tmp_path, *overrides))
    assert len(found) == 1 and re.search(message, found[0])


def test_building_the_run_warns_of_such_a_plan_once(tmp_path: Path) -> None:
    config = small_config(tmp_path, "schedule.warmup_steps=30")
    assert plan_warnings(small_config(tmp_path)) == []
    with pytest.warns(UserWarning, match="schedule.warmup_steps") as record:
        build_trainer(config)
    assert sum("warmup" in str(w.message) for w in record) == 1


def test_resume_refuses_a_changed_schedule_step_shape_or_kernels() -> None:
    saved = {
        "schedule": {"warmup_steps": 20},
        "training": {"grad_accum": 1, "max_steps": 30, "compile": False},
    }
    now = {"schedule": {"warmup_steps": 0},
           "training": {"grad_accum": 4, "max_steps": 60, "compile": True}}  # fmt: skip
    assert resume_mismatches(saved, now) == [
        "schedule.warmup_steps: checkpoint 20, this run 0",
        "training.compile: checkpoint False, this run True",
        "training.grad_accum: checkpoint 1, this run 4",
    ]  # max_steps may change: it extends (or shortens) the run


@pytest.mark.parametrize(("before", "after", "warned"), [(0, 2, True), (2, 0, True),
                                                         (2, 1, False), (0, 0, False)])  # fmt: skip
def test_resume_warns_when_dataset_draws_move_between_processes(
    before: int, after: int, warned: bool
) -> None:
    """Some workers or none: a random dataset draws from per-batch seeds, or from the main
    process's RNGs. Any number of workers above 0 draws the same."""
    found = resume_warnings({"loader": {"num_workers": before}}, {"loader": {"num_workers": after}})
    assert bool(found) == warned
    assert not found or found[0].startswith(f"loader.num_workers: checkpoint {before}, this run")


def test_resume_compares_free_form_maps_whole() -> None:
    """A loss argument added on resume is a change, though the checkpoint lacks the key."""
    saved = {"task": {"loss_kwargs": {}}, "model": {"kwargs": {"a": 1}}}
    now = {"task": {"loss_kwargs": {"temperature": 0.5}}, "model": {"kwargs": {}}}
    assert resume_mismatches(saved, now) == [
        "model.kwargs: checkpoint {'a': 1}, this run {}",
        "task.loss_kwargs: checkpoint {}, this run {'temperature': 0.5}",
    ]


def test_an_older_configs_prefetch_factor_without_workers_still_validates() -> None:
    """Configs saved by earlier versions (meta.json) hold torch's default 2 with no workers."""
    config = validate_config({"loader": {"num_workers": 0, "prefetch_factor": 2}})
    assert config.loader.prefetch_factor is None


def test_a_path_holding_a_nul_character_is_a_config_error(tmp_path: Path) -> None:
    """TOML can write one (\\u0000); the OS cannot open it, and Python's bare ValueError
    would come at the first file written."""
    (tmp_path / "c.toml").write_text('out_dir = "runs\\u0000x"\n')
    with pytest.raises(ConfigError, match=r"out_dir: 'runs\\x00x' holds a NUL character"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=r"data.paths.0: 'a\\x00' holds a NUL character"):
        validate_config({"data": {"kind": "text", "paths": ["a\x00"]}})


@pytest.mark.parametrize(
    ("override", "field"),
    [("loader.batch_size=true", "loader.batch_size"), ("optim.lr=true", "optim.lr"),
     ("model.hidden=[true, 64]", "model.hidden"), ("seed=false", "seed"),
     ("checkpoint.keep_best=true", "checkpoint.keep_best")],
)  # fmt: skip
def test_a_boolean_for_a_number_is_refused_naming_the_field(override: str, field: str) -> None:
    """pydantic would read true as 1: a batch of one, an lr of 1.0."""
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: a number, not a boolean"):
        load_config("digits-classifier", [override])
    config, _ = load_config("digits-classifier", ["training.compile=false", "optim.fused=true"])
    assert config.training.compile is False and config.optim.fused is True  # bools stay bools


@pytest.mark.parametrize("override", ["training.compile=1", "training.compile=yes",
                                      "data.captions=0", "optim.fused='true'"])  # fmt: skip
def test_a_flag_takes_true_or_false_only(override: str) -> None:
    """pydantic would read 1 or "yes" as true (YAML 1.2 reads `yes` as text)."""
    field = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: true or false; got"):
        load_config("digits-classifier", [override])
    config, _ = load_config("digits-classifier", ["optim.fused=null"])
    assert config.optim.fused is None  # a flag that may be unset still may be


def test_a_value_nested_deeper_than_python_recurses_is_checked_without_recursing() -> None:
    deep = "[" * 300 + "]" * 300  # as deep as YAML reads here; the fuzz found such a value
    with pytest.raises(ConfigError):
        load_config("digits-classifier", [f"model.hidden={deep}"])


def test_a_key_given_twice_is_refused_in_yaml_as_in_toml(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.001\n  lr: 0.5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: the key 'lr' is given twice \(again on line 3"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"override 'optim=\{lr: 0.001, lr: 0.5\}': the key 'lr'"):
        load_config("digits-classifier", ["optim={lr: 0.001, lr: 0.5}"])
    # A merge key's values may be overridden: that is not a key given twice.
    (tmp_path / "m.yaml").write_text("base: &b {lr: 0.1, weight_decay: 0.0}\n"
                                     "optim:\n  <<: *b\n  lr: 0.5\n")  # fmt: skip
    assert read_config_file(tmp_path / "m.yaml")["optim"] == {"lr": 0.5, "weight_decay": 0.0}
    # Nor when the mapping that overrides is itself merged, deeper than its user.
    (tmp_path / "n.yaml").write_text("base: &root {a: 1}\ndefs:\n  inner: &mid\n"
                                     "    <<: *root\n    a: 2\ntop:\n  <<: *mid\n")  # fmt: skip
    assert read_config_file(tmp_path / "n.yaml")["defs"] == {"inner": {"a": 2}}
