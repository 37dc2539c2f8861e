"""Text sampling for language models: greedy at top_k=1, temperature and top-k really act."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchsmith.interfaces import ConfigError, DataError
from torchsmith.trainer import apply_overrides, build_trainer, validate_config
from torchsmith.trainer._datasets import Tokenizer
from torchsmith.trainer._evaluate import TextSampler, next_token_probs
from torchsmith.trainer._models import GPT

TOKENIZER = Tokenizer.fit("char", "abcdefghijklmnop\n")
BLOCK = 8  # shorter than the 24 sampled characters: the context window slides


def _model() -> GPT:
    torch.manual_seed(0)
    model = GPT(TOKENIZER.vocab_size, BLOCK, n_layer=1, n_head=2, n_embd=16)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # peaked next-token distributions, as after training
    return model


def _samples(model: GPT, seeds: range, temperature: float, top_k: int | None) -> list[str]:
    sampler = TextSampler(TOKENIZER, BLOCK, 24, "a", temperature, top_k)
    return [sampler(model, step=seed) for seed in seeds]  # the generator's seed is seed + step


def _greedy(model: GPT, prompt: str, n: int) -> str:
    """Argmax decoding written out, one token at a time."""
    tokens = TOKENIZER.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([tokens[-BLOCK:]]))[0, -1]
            tokens.append(int(logits.argmax()))
    return TOKENIZER.decode(tokens)


@torch.no_grad()
def _outside_top(model: GPT, text: str, k: int) -> int:
    """How many sampled characters were not among the model's k likeliest at their step."""
    tokens, outside = TOKENIZER.encode(text), 0
    for t in range(1, len(tokens)):
        logits = model(torch.tensor([tokens[:t][-BLOCK:]]))[0, -1]
        outside += tokens[t] not in logits.topk(k).indices.tolist()
    return outside


def test_top_k_one_is_greedy_whatever_the_seed() -> None:
    model = _model()
    texts = _samples(model, range(5), temperature=2.0, top_k=1)
    assert texts == [_greedy(model, "a", 24)] * 5


def test_temperature_spreads_and_sharpens_the_samples() -> None:
    model = _model()
    hot = _samples(model, range(6), temperature=5.0, top_k=None)
    assert len(set(hot)) == 6  # every seed a different text
    cold = _samples(model, range(6), temperature=1e-3, top_k=None)
    assert cold == [_greedy(model, "a", 24)] * 6  # T -> 0 is argmax


def test_top_k_draws_only_from_the_k_likeliest() -> None:
    model = _model()
    texts = _samples(model, range(4), temperature=5.0, top_k=2)
    assert len(set(texts)) > 1  # still random among the two
    assert [_outside_top(model, text, 2) for text in texts] == [0, 0, 0, 0]
    # Without the cut, the same hot sampler does leave the top two.
    free = _samples(model, range(4), temperature=5.0, top_k=None)
    assert sum(_outside_top(model, text, 2) for text in free) > 0


def test_a_prompt_the_tokenizer_cannot_encode_fails_before_training(tmp_path: Path) -> None:
    config = validate_config(
        apply_overrides(
            {"out_dir": str(tmp_path)},
            ["model.kind=gpt", "data.kind=text", "task.kind=causal_lm",
             "eval.sample_tokens=20", "eval.sample_prompt=Ω"],
        )
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"eval.sample_prompt: characters \['Ω'\] are not in"):
        build_trainer(config)
    with pytest.raises(DataError, match="not in the tokenizer's vocabulary"):
        TextSampler(TOKENIZER, BLOCK, prompt="xyz")


class _Padded(torch.nn.Module):
    """A model whose vocabulary is padded by 40 ids, made the likeliest by far."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _model()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.inner(tokens)
        padding = torch.full((*logits.shape[:-1], 40), 100.0)
        return torch.cat([logits, padding], dim=-1)


def test_a_vocabulary_padded_beyond_the_tokenizer_samples_only_its_ids() -> None:
    """``model.vocab_size`` may exceed the tokenizer's (padded, as nanoGPT pads GPT-2's to
    50304); the ids above it have no text, so sampling never draws them."""
    sampler = TextSampler(TOKENIZER, BLOCK, 24, "a", temperature=5.0, top_k=None)
    texts = [sampler(_Padded(), step=seed) for seed in range(4)]
    assert len(set(texts)) > 1
    assert all(len(text) == 25 and set(text) <= set("abcdefghijklmnop\n") for text in texts)


def test_a_tiny_temperature_is_greedy_not_nan() -> None:
    """``logits / 1e-45`` overflows to inf and inf - inf is NaN: the logits are shifted first."""
    model = _model()
    greedy = _samples(model, range(2), 1.0, top_k=1)
    assert _samples(model, range(2), 1e-45, top_k=None) == greedy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("temperature", [1e-38, 1e-46, 1e-300, 5e-324])
def test_a_temperature_below_the_dtypes_range_is_greedy_not_nan(
    temperature: float, dtype: torch.dtype
) -> None:
    """1e-300 is 0 as a float32: the largest logit, shifted to 0, was 0 / 0 = NaN, and
    sampling raised at the run's first evaluation (the config accepts any temperature > 0)."""
    logits = torch.tensor([[-1.0, 0.0, 2.0, 2.0 - 1e-3], [3.0, -3.0, 0.5, 0.25]], dtype=dtype)
    probs = next_token_probs(logits, temperature)
    assert not probs.isnan().any()
    assert probs.argmax(-1).tolist() == [2, 0] and (probs.amax(-1) >= 0.5).all()
    close = torch.tensor([[0.0, -1e-4, -3.0]], dtype=dtype)  # 1e-4 apart: still greedy
    assert next_token_probs(close, min(temperature, 1e-6))[0, 0] == 1.0


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, 4), (1.6, 1), (0.3, 50)])
def test_the_sampled_distribution_is_transformers_temperature_then_top_k(
    temperature: float, top_k: int | None
) -> None:
    """The same as transformers' logits warpers, applied in its generate's order."""
    process = pytest.importorskip("transformers.generation.logits_process")
    torch.manual_seed(0)
    logits = torch.randn(5, 40) * 3
    ids = torch.zeros(5, 1, dtype=torch.long)
    theirs = process.TemperatureLogitsWarper(temperature)(ids, logits.clone())
    if top_k is not None:
        theirs = process.TopKLogitsWarper(top_k)(ids, theirs)
    expected = torch.softmax(theirs, dim=-1)
    torch.testing.assert_close(next_token_probs(logits, temperature, top_k), expected)


def test_a_diverged_model_gives_no_sample_and_a_warning_not_a_crash() -> None:
    """NaN logits: torch.multinomial raised, and the run died at its evaluation before the
    eval event and the checkpoint were written. -inf logits (a masked token) still sample."""

    class Masked(torch.nn.Module):
        def __init__(self, inner: GPT, fill: float) -> None:
            super().__init__()
            self.inner, self.fill = inner, fill

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.inner(x)
            logits[..., 3] = self.fill  # one token's logit
            return logits

    sample = _samples(Masked(_model(), float("-inf")), range(1), 1.0, None)[0]  # type: ignore[arg-type]
    assert len(sample) == 25 and TOKENIZER.decode([3]) not in sample[1:]
    for fill in (float("nan"), float("inf")):
        diverged = Masked(_model(), fill)
        with pytest.warns(UserWarning, match=r"text sampling at step 0: .* NaN or inf \(token 0\)"):
            assert _samples(diverged, range(1), 1.0, None) == [""]  # type: ignore[arg-type]
