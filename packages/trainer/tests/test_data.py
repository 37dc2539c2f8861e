"""Data: the resumable sampler, the batch stream's position, datasets and tokenizers."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchsmith.interfaces import DataError
from torchsmith.trainer import (
    BatchSeeded,
    BatchStream,
    Gathered,
    ResumableSampler,
    Tokenizer,
    build_loader,
    digits,
    text_corpus,
)


def test_sampler_starts_mid_epoch_on_the_same_order() -> None:
    full = list(ResumableSampler(100, 8, seed=5))
    resumed = ResumableSampler(100, 8, seed=5)
    resumed.set_position(0, start_batch=7)
    assert list(resumed) == full[7 * 8 :]
    assert len(full) == 96 and sorted(set(full)) == sorted(full)  # 12 batches, no repeats


def test_sampler_epochs_differ_and_are_reproducible() -> None:
    a, b = ResumableSampler(50, 5, seed=1), ResumableSampler(50, 5, seed=1)
    a.set_position(3)
    b.set_position(3)
    assert list(a) == list(b)
    b.set_position(4)
    assert list(a) != list(b)


def test_ranks_split_each_global_batch() -> None:
    single = list(ResumableSampler(64, 8, seed=2))
    ranks = [list(ResumableSampler(64, 4, seed=2, rank=r, world_size=2)) for r in range(2)]
    for batch in range(8):
        union = ranks[0][batch * 4 : batch * 4 + 4] + ranks[1][batch * 4 : batch * 4 + 4]
        assert union == single[batch * 8 : batch * 8 + 8]


def test_too_small_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match="make no global batch"):
        ResumableSampler(3, 4)


def test_batch_stream_counts_and_resumes() -> None:
    dataset = TensorDataset(torch.arange(40))

    def stream() -> BatchStream:
        sampler = ResumableSampler(40, 4, seed=0)
        return BatchStream(build_loader(dataset, 4, sampler=sampler, seed=0), sampler, seed=0)

    a = stream()
    seen = [next(a)[0] for _ in range(23)]  # 10 per epoch: into epoch 2
    assert a.state_dict() == {"epoch": 2, "batches_done": 3, "examples": 40, "batch_size": 4}
    b = stream()
    b.load_state_dict({"epoch": 1, "batches_done": 6})
    assert all(torch.equal(next(b)[0], seen[i]) for i in range(16, 23))


def _counting_stream() -> BatchStream:
    sampler = ResumableSampler(40, 4, seed=0)
    return BatchStream(build_loader(TensorDataset(torch.arange(40)), 4, sampler=sampler), sampler)


def test_take_and_advance_match_one_batch_at_a_time() -> None:
    one_by_one, runs = _counting_stream(), _counting_stream()
    expected = [next(one_by_one)[0] for _ in range(23)]  # 10 per epoch: into epoch 2
    got: list[torch.Tensor] = []
    for count in (4, 6, 7, 3, 3):  # windows end at the epoch ends, as the trainer's do
        batches = [b[0] for b in runs.take(count)]
        assert len(batches) == count
        runs.advance(count)
        got += batches
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert runs.state_dict() == one_by_one.state_dict()
    assert runs.state_dict()["epoch"] == 2 and runs.state_dict()["batches_done"] == 3


def test_a_batch_read_but_not_used_is_read_again() -> None:
    stream, reference = _counting_stream(), _counting_stream()
    order = [next(reference)[0] for _ in range(5)]
    batches = stream.take(5)
    for _ in range(3):  # batches 0 and 1 used; batch 2 read, then its step raised
        next(batches)
    stream.advance(2, read_all=False)
    assert torch.equal(next(stream)[0], order[2])
    assert stream.state_dict()["batches_done"] == 3


def test_a_loader_batch_size_other_than_the_samplers_is_refused() -> None:
    sampler = ResumableSampler(40, 4)
    with pytest.raises(ValueError, match="batch_size 8 differs from its sampler's 4"):
        BatchStream(build_loader(TensorDataset(torch.arange(40)), 8, sampler=sampler), sampler)


def test_prefetch_factor_reaches_the_workers_and_needs_them() -> None:
    data = TensorDataset(torch.arange(8))
    assert build_loader(data, 4, num_workers=1, prefetch_factor=3).prefetch_factor == 3
    with pytest.raises(ValueError, match="prefetch_factor"):  # torch's own refusal
        build_loader(data, 4, prefetch_factor=3)


def test_workers_are_seeded_deterministically() -> None:
    class Noisy(torch.utils.data.Dataset[float]):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> float:
            return float(np.random.rand())

    def draw() -> list[float]:
        loader = build_loader(Noisy(), 4, sampler=ResumableSampler(8, 4), num_workers=2, seed=9)
        return [x for batch in loader for x in batch.tolist()]

    assert draw() == draw()


class _Augmented(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Draws from python, numpy and torch per sample, as augmentations do."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import random

        noise = random.random() + float(np.random.rand()) + torch.rand(3)
        return noise + i, i


def _worker_stream(num_workers: int) -> BatchStream:
    sampler = ResumableSampler(40, 4, seed=1)
    loader = build_loader(_Augmented(), 4, sampler=sampler, num_workers=num_workers, seed=1)
    return BatchStream(loader, sampler, seed=1)


def test_worker_randomness_resumes_mid_epoch_exactly() -> None:
    a = _worker_stream(num_workers=2)
    seen = [next(a) for _ in range(25)]  # 10 batches per epoch: into epoch 2
    resumed = _worker_stream(num_workers=2)
    resumed.load_state_dict({"epoch": 1, "batches_done": 3})  # fresh workers, mid-epoch
    for x, _ in seen[13:]:
        assert torch.equal(next(resumed)[0], x)
    # The batch decides the numbers, not the worker: one worker draws what two drew.
    one = _worker_stream(num_workers=1)
    assert all(torch.equal(next(one)[0], x) for x, _ in seen[:12])
    # Epochs draw afresh: every sample gets new noise in the next epoch.
    epochs = [
        {
            int(i): row
            for x, ids in seen[e * 10 : e * 10 + 10]
            for row, i in zip(x, ids, strict=True)
        }
        for e in (0, 1)
    ]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(40))
    assert not any(torch.equal(epochs[0][i], epochs[1][i]) for i in range(40))


def test_digits_split_and_ranges() -> None:
    train, val = digits(0.2, seed=0)
    assert len(train) + len(val) == 1797 and len(val) == 359
    x, y = train[0]
    assert x.shape == (64,) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert 0 <= int(y) <= 9


def test_digits_captions() -> None:
    train, _ = digits(captions=True)
    _, caption = train[0]
    text = bytes(t for t in caption.tolist() if t).decode()
    assert text.startswith("the digit ")


def test_tokenizers_round_trip() -> None:
    text = "héllo, world\n# title"
    for kind in ("char", "byte"):
        tok = Tokenizer.fit(kind, text)
        assert tok.decode(tok.encode(text)) == text
    assert Tokenizer.fit("byte", text).vocab_size == 256
    assert Tokenizer.fit("char", text).vocab_size == len(set(text))
    with pytest.raises(DataError, match="not in the tokenizer"):
        Tokenizer.fit("char", "abc").encode("abz")


def test_text_corpus_blocks_shift_by_one(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("abcdefghij" * 20)
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    train, _, tok = text_corpus([tmp_path], "char", block_size=8, val_fraction=0.1)
    x, y = train[1]
    assert x.shape == (8,) and torch.equal(x[1:], y[:-1])
    assert tok.decode(x.tolist()) == "efghijab"  # stride is half a block
    with pytest.raises(DataError, match=r"^data\.paths: .*missing does not exist$"):
        text_corpus([tmp_path / "missing"], "char", 8, 0.1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"^data\.paths: no text files \(\.md, .*\) in /.*empty$"):
        text_corpus([tmp_path / "empty"], "char", 8, 0.1)


def test_a_corpus_that_cannot_be_read_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "notes.MD").write_text("upper-case suffixes count too. " * 20)
    (tmp_path / "folder.md").mkdir()  # a directory named like a text file is walked, not read
    (tmp_path / "folder.md" / "inner.txt").write_text("inner text. " * 20)
    train, _, tok = text_corpus([tmp_path], "char", block_size=8, val_fraction=0.1)
    assert "upper-case" in tok.decode(train.tokens.tolist()) and "inner" in tok.decode(
        train.tokens.tolist()
    )
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt is not UTF-8 \(byte 3"):
        text_corpus([tmp_path], "char", 8, 0.1)
    (tmp_path / "latin.txt").write_bytes("\ufeffcaf\xe9".encode()[:-2] + b"\xe9")
    with pytest.raises(DataError, match=r"latin.txt is not UTF-8 \(byte 6"):  # BOM counted
        text_corpus([tmp_path], "char", 8, 0.1)
    (tmp_path / "latin.txt").unlink()
    (tmp_path / "dump.txt").write_bytes(b"header\0\0\x01\x02" * 40)  # valid UTF-8, binary
    with pytest.raises(DataError, match=r"dump.txt holds a NUL character \(character 6\)"):
        text_corpus([tmp_path], "char", 8, 0.1)


def test_a_corpus_reads_each_file_once_and_no_hidden_folder(tmp_path: Path) -> None:
    """Named twice, or alone and inside a named folder: read once (twice, its text could
    land in training and validation both). ``.git`` or ``.venv`` under a folder: not read.
    A byte-order mark is not a character of the text."""
    from torchsmith.trainer._datasets import read_corpus

    (tmp_path / "a.md").write_text("\ufeffalpha\n", encoding="utf-8")
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "README.md").write_text("hidden\n")
    text = read_corpus([tmp_path, tmp_path / "a.md", tmp_path / "." / "a.md"])
    assert text == "alpha\n"


def test_a_corpus_is_read_as_its_bytes_are_and_only_from_files(tmp_path: Path) -> None:
    """Windows line ends stay "\r\n" (text mode would make them "\n", and a byte tokenizer
    would see 2 bytes fewer a line than the file holds). A FIFO is refused, not read."""
    import os

    (tmp_path / "crlf.txt").write_bytes(b"line\r\n" * 200)
    train, val, tok = text_corpus([tmp_path / "crlf.txt"], "byte", block_size=8, val_fraction=0.1)
    assert len(train.tokens) + len(val.tokens) == 6 * 200
    assert tok.decode(train.tokens[:6].tolist()) == "line\r\n"
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.txt")
        with pytest.raises(DataError, match=r"^data\.paths: .*pipe.txt is neither a file nor a"):
            text_corpus([tmp_path / "pipe.txt"], "char", 8, 0.1)


def test_a_corpus_too_short_for_a_validation_block_names_the_fields(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 440)  # 44 tokens of validation for blocks of 64
    with pytest.raises(DataError) as caught:
        text_corpus([tmp_path], "char", block_size=64, val_fraction=0.1)
    message = str(caught.value)
    assert message.startswith("data.block_size: the corpus's 440 tokens leave 44 for validation")
    assert "data.val_fraction 0.1" in message


def test_a_corpus_of_empty_files_is_named_as_such_not_as_a_block_size(tmp_path: Path) -> None:
    for name in ("a.txt", "b.md"):
        (tmp_path / name).write_text("")
    (tmp_path / "c.txt").write_text(" \n")
    with pytest.raises(DataError, match=r"^data\.paths: the corpus \(.*\) holds no text, only"):
        text_corpus([tmp_path], "char", block_size=8, val_fraction=0.1)


def test_a_batch_stream_refuses_a_loader_of_single_examples() -> None:
    sampler = ResumableSampler(100, 10)
    unbatched = DataLoader(TensorDataset(torch.arange(100)), sampler=sampler, batch_size=None)
    with pytest.raises(ValueError, match=r"yields single examples \(batch_size=None\)"):
        BatchStream(unbatched, sampler)


def _same_batches(got: list[list[torch.Tensor]], expected: list[list[torch.Tensor]]) -> None:
    """Equal value for value, and alike in what a model could notice: dtype, shape, layout."""
    assert len(got) == len(expected) > 0
    for ours, theirs in zip(got, expected, strict=True):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous()
            assert torch.equal(a, b)


def _plain_batches(dataset: torch.utils.data.Dataset[Any], sampler: ResumableSampler) -> list[Any]:
    return list(DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_tensor_dataset_is_read_a_batch_at_a_time_with_the_same_batches(
    num_workers: int,
) -> None:
    train, _ = digits()
    assert isinstance(train, TensorDataset)  # image (64,) float32, label () int64
    for epoch, start in ((0, 0), (3, 5)):
        sampler = ResumableSampler(len(train), 32, seed=4)
        sampler.set_position(epoch, start)
        expected = _plain_batches(train, sampler)
        loader = build_loader(train, 32, sampler=sampler, num_workers=num_workers, seed=4)
        read = loader.dataset.dataset if num_workers else loader.dataset  # type: ignore[attr-defined]
        assert isinstance(read, Gathered)  # with workers inside BatchSeeded, which seeds each batch
        sampler.set_position(epoch, start)
        _same_batches(list(loader), expected)


def test_token_blocks_are_gathered_as_a_loader_would_stack_them(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("the quick brown fox jumps over the lazy dog " * 20)
    train, _, _ = text_corpus([tmp_path], "char", block_size=16, val_fraction=0.1)
    sampler = ResumableSampler(len(train), 8, seed=2)
    loader = build_loader(train, 8, sampler=sampler)
    assert isinstance(loader.dataset, Gathered)
    _same_batches(list(loader), _plain_batches(train, sampler))


def test_datasets_that_cannot_be_gathered_are_read_item_by_item() -> None:
    class Doubled(TensorDataset):  # a subclass may change __getitem__: not gathered
        def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
            return tuple(2 * t for t in super().__getitem__(i))

    doubled = Doubled(torch.arange(12.0))
    loader = build_loader(doubled, 4, sampler=ResumableSampler(12, 4, shuffle=False))
    assert not isinstance(loader.dataset, Gathered)
    assert torch.equal(next(iter(loader))[0], torch.tensor([0.0, 2.0, 4.0, 6.0]))
    with pytest.raises(TypeError, match="Doubled is neither a TensorDataset nor has"):
        Gathered(doubled)


def test_without_a_sampler_drop_last_decides_the_short_batch() -> None:
    dataset = TensorDataset(torch.arange(10), torch.arange(10) * 2)
    dropped = [b[0].tolist() for b in build_loader(dataset, 4)]
    assert dropped == [[0, 1, 2, 3], [4, 5, 6, 7]]
    kept = list(build_loader(dataset, 4, drop_last=False))  # evaluation reads every example
    assert [b[0].tolist() for b in kept] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.equal(kept[-1][1], torch.tensor([16, 18]))


def test_batch_seeded_reads_one_item_or_a_batch_of_a_gathered_dataset() -> None:
    dataset = TensorDataset(torch.arange(10.0), torch.arange(10) * 3)
    seeded = BatchSeeded(Gathered(dataset), num_samples=10, seed=0)
    x, y = seeded[13]  # epoch 1, index 3: one item, as the dataset gives it
    assert x.shape == () and float(x) == 3.0 and int(y) == 9
    xs, ys = seeded.__getitems__([12, 13])  # a batch, collated already
    assert xs.tolist() == [2.0, 3.0] and ys.tolist() == [6, 9]


def test_the_python_parts_refuse_arguments_that_mean_nothing(tmp_path: Path) -> None:
    """What the config validates, the parts check too when called directly: one clear error
    naming the argument, not an IndexError or a split with an empty side."""
    for fraction in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
            digits(fraction)
    (tmp_path / "a.md").write_text("abcdefgh" * 10)
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        text_corpus([tmp_path], "char", 4, 1.5)
    with pytest.raises(ValueError, match="block_size must be positive, not 0"):
        text_corpus([tmp_path], "char", 0, 0.1)
    with pytest.raises(DataError, match="tokenizer 'word' is not one of"):
        Tokenizer("word")
    with pytest.raises(
        DataError, match=r"token ids \[-1, 3\] are not among the char tokenizer's 3"
    ):
        Tokenizer.fit("char", "abc").decode([0, -1, 3])
    with pytest.raises(DataError, match=r"token ids \[300\] are not among the byte tokenizer's"):
        Tokenizer("byte").decode([300])
    for bad in ({"batch_size": 0}, {"batch_size": 4, "rank": 2, "world_size": 2}):
        with pytest.raises(ValueError, match="ResumableSampler needs batch_size > 0"):
            ResumableSampler(100, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a position is never negative"):
        ResumableSampler(100, 8).set_position(0, -1)
    sampler = ResumableSampler(100, 8)
    stream = BatchStream(build_loader(TensorDataset(torch.zeros(100)), 8, sampler=sampler), sampler)
    for state in ({"epoch": -1, "batches_done": 0}, {"epoch": "x", "batches_done": 0}, {}):
        with pytest.raises(ValueError, match="the data position needs non-negative integers"):
            stream.load_state_dict(state)  # type: ignore[arg-type]


def test_a_position_from_another_dataset_or_batch_size_is_refused() -> None:
    """3 batches of 5 of 100 examples end at example 15; read as batches of 7 they would end
    at 21 and skip 6 examples. The stream says so rather than resume there."""

    def stream(examples: int, batch: int) -> BatchStream:
        sampler = ResumableSampler(examples, batch)
        data = TensorDataset(torch.arange(examples))
        return BatchStream(build_loader(data, batch, sampler=sampler), sampler)

    saved = stream(100, 5)
    for _ in range(3):
        next(saved)
    state = saved.state_dict()
    for examples, batch in ((100, 7), (120, 5)):
        message = rf"counted over 100 examples in batches of 5, and this data has {examples} in"
        with pytest.raises(ValueError, match=message):
            stream(examples, batch).load_state_dict(state)
    for bad in (100.0, True, "100"):
        with pytest.raises(ValueError, match=r"examples and batch_size: integers, not"):
            stream(100, 5).load_state_dict({**state, "examples": bad})
    older = {"epoch": 0, "batches_done": 3}  # a checkpoint from before the two were saved
    resumed = stream(100, 5)
    resumed.load_state_dict(older)
    assert torch.equal(next(resumed)[0], next(saved)[0])


def test_a_fixed_tail_that_never_trains_is_warned_about_and_drop_last_false_refused() -> None:
    with pytest.warns(UserWarning, match=r"the last 6 of the 38 examples never train"):
        ResumableSampler(38, 8, shuffle=False)
    with pytest.warns(UserWarning, match=r"the last 14 of the 38 examples never train"):
        ResumableSampler(38, 8, shuffle=False, world_size=3)  # batches of 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ResumableSampler(38, 8)  # shuffled: each epoch leaves out other examples
        ResumableSampler(40, 8, shuffle=False)  # nothing left out
        ResumableSampler(38, 8, shuffle=False, rank=1, world_size=2)  # rank 0 says it
    data = TensorDataset(torch.arange(38))
    with pytest.raises(ValueError, match="drop_last=False: a ResumableSampler yields whole"):
        build_loader(data, 8, sampler=ResumableSampler(38, 8), drop_last=False)
