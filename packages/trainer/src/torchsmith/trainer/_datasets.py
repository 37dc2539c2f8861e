"""Built-in datasets that need no download: scikit-learn's digits and a text corpus on disk."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from torchsmith.interfaces import DataError

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_LENGTH = 24


def digits(
    val_fraction: float = 0.2, seed: int = 0, captions: bool = False
) -> tuple[TensorDataset, TensorDataset]:
    """(train, val) of 8x8 digit images flattened to 64 floats in [0, 1], and labels.

    With ``captions``, the second tensor is a caption such as "the digit three",
    as ``CAPTION_LENGTH`` bytes (zero padded), for image-text training.
    """
    _check_fraction(val_fraction)
    table = _digits_table()  # (N, 65): 64 pixels in 0..16, then the label
    images = torch.tensor(table[:, :64], dtype=torch.float32) / 16.0  # (N, 64)
    labels = torch.tensor(table[:, 64], dtype=torch.int64)  # (N,)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    images, labels = images[order], labels[order]
    n_val = max(1, int(len(labels) * val_fraction))
    second = caption_tokens(labels) if captions else labels
    train = TensorDataset(images[n_val:], second[n_val:])
    val = TensorDataset(images[:n_val], second[:n_val])
    return train, val


def _digits_table() -> np.ndarray:
    """scikit-learn's bundled ``digits.csv.gz``, read without importing scikit-learn.

    ``sklearn.datasets`` pulls in scipy.stats and takes seconds to import; the
    file it reads is all we need (``load_digits`` parses the same file).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the digits data ships with scikit-learn: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"scikit-learn's digits file is missing at {path}")
    return np.loadtxt(path, delimiter=",", dtype=np.float64)


def caption_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Byte tokens of "the digit <name>" for each label, zero padded: (N, CAPTION_LENGTH)."""
    rows = []
    for label in labels.tolist():
        text = f"the digit {DIGIT_NAMES[label]}".encode()
        rows.append(list(text) + [0] * (CAPTION_LENGTH - len(text)))
    return torch.tensor(rows, dtype=torch.int64)


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:  # NaN fails too
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), not {val_fraction}")


@dataclass(frozen=True)
class Tokenizer:
    """A character- or byte-level tokenizer; a char vocabulary is the corpus's sorted characters."""

    kind: str
    chars: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("char", "byte"):
            raise DataError(f"tokenizer {self.kind!r} is not one of 'char', 'byte'")

    @classmethod
    def fit(cls, kind: str, text: str) -> Tokenizer:
        """A ``"char"`` tokenizer over the characters of ``text`` (sorted), or ``"byte"``."""
        if kind == "byte":
            return cls("byte")
        return cls(kind, "".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """The number of ids: 256 bytes, or the characters seen."""
        return 256 if self.kind == "byte" else len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; a DataError names a character the tokenizer never saw."""
        if self.kind == "byte":
            return list(text.encode("utf-8"))
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise DataError(f"characters {unknown[:10]} are not in the tokenizer's vocabulary")
        return [index[c] for c in text]

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens``; an id outside the vocabulary is a DataError (bytes that
        are not valid UTF-8 decode as U+FFFD)."""
        outside = [t for t in tokens if not 0 <= t < self.vocab_size]
        if outside:
            raise DataError(
                f"token ids {outside[:10]} are not among the {self.kind} tokenizer's "
                f"{self.vocab_size} (0 to {self.vocab_size - 1})"
            )
        if self.kind == "byte":
            return bytes(tokens).decode("utf-8", errors="replace")
        return "".join(self.chars[t] for t in tokens)


class TokenBlocks(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(input, target) pairs of ``block_size`` tokens, target shifted by one, half-block stride."""

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        if len(tokens) < block_size + 1:
            raise DataError(f"{len(tokens)} tokens are too few for block_size {block_size}")
        self.tokens, self.block_size = tokens, block_size
        self.stride = max(1, block_size // 2)

    def __len__(self) -> int:
        return (len(self.tokens) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.stride
        chunk = self.tokens[start : start + self.block_size + 1]
        return chunk[:-1], chunk[1:]

    def gather_batch(self, indices: list[int]) -> list[torch.Tensor]:
        """Blocks ``indices`` as one batch, [inputs (B, T), targets (B, T)], in one gather:
        what a DataLoader would stack from ``self[i]``, read at once (see ``Gathered``)."""
        starts = torch.tensor(indices) * self.stride
        chunks = self.tokens[starts[:, None] + torch.arange(self.block_size + 1)]  # (B, T + 1)
        return [chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()]


def shipped_corpus() -> list[Path]:
    """The markdown files shipped inside this package (a small corpus about training loops)."""
    root = resources.files("torchsmith.trainer") / "corpus"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(TEXT_SUFFIXES))


def read_corpus(paths: list[Path]) -> str:
    """The text of every file (directories: their text files, sorted, hidden ones such as
    ``.git`` or ``.venv`` left out), joined by blank lines; a file named twice, or both
    alone and inside a named directory, is read once."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
            visible = (p for p in found if not _hidden(p.relative_to(path)))
            files += sorted(p for p in visible if p.is_file())
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a FIFO or a device: reading it could block, or never end
            raise DataError(f"data.paths: {path} is neither a file nor a directory")
        else:
            raise DataError(f"data.paths: {path} does not exist")
    unique: dict[Path, Path] = {}  # by where the file really is, in first-named order
    for file in files:
        unique.setdefault(file.resolve(), file)
    files = list(unique.values())
    if not files:
        where = ", ".join(str(p) for p in paths)
        raise DataError(f"data.paths: no text files ({', '.join(TEXT_SUFFIXES)}) in {where}")
    return "\n\n".join(_read_text(f) for f in files)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_text(path: Path) -> str:
    try:
        # Decoded from the bytes, not read in text mode, which would turn "\r\n" into "\n":
        # a tokenizer sees the file as it is. A byte-order mark is not text; it is dropped
        # after decoding, so that an error's byte offset is the file's own.
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"text data file {path} is not UTF-8 (byte {exc.start}: {exc.reason}); "
            "convert it, or leave it out of data.paths"
        ) from exc
    except OSError as exc:
        raise DataError(f"text data file {path} cannot be read: {exc.strerror}") from exc
    if "\0" in text:  # valid UTF-8, but a NUL is what marks a binary file (as git decides)
        raise DataError(
            f"text data file {path} holds a NUL character (character {text.index(chr(0))}), "
            "so it is binary, not text; leave it out of data.paths"
        )
    return text


def text_corpus(
    paths: list[Path], tokenizer: str, block_size: int, val_fraction: float
) -> tuple[TokenBlocks, TokenBlocks, Tokenizer]:
    """(train, val, tokenizer): the corpus's first part trains, its tail validates."""
    _check_fraction(val_fraction)
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, not {block_size}")
    text = read_corpus(paths)
    if not text.strip():  # files are joined by blank lines: empty files make only those
        listed = ", ".join(str(p) for p in paths)
        raise DataError(f"data.paths: the corpus ({listed}) holds no text, only whitespace")
    tok = Tokenizer.fit(tokenizer, text)
    tokens = torch.tensor(tok.encode(text), dtype=torch.int64)
    split = int(len(tokens) * (1.0 - val_fraction))
    parts = {"training": tokens[:split], "validation": tokens[split:]}
    for name, part in parts.items():
        if len(part) < block_size + 1:
            raise DataError(
                f"data.block_size: the corpus's {len(tokens)} tokens leave {len(part)} for "
                f"{name} (data.val_fraction {val_fraction}), too few for one block of "
                f"{block_size} tokens and its next token; add text, or lower data.block_size "
                "or adjust data.val_fraction"
            )
    return (
        TokenBlocks(parts["training"], block_size),
        TokenBlocks(parts["validation"], block_size),
        tok,
    )
