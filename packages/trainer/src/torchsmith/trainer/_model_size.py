"""How big a built-in model is, known before it is built.

A typo in a size (``n_layer = 1000000``, ``hidden = [10000000]``) would otherwise build
block after block until the machine runs out of memory and the kernel kills the process
without a word; counted first, it is a ConfigError naming the section.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from torchsmith.interfaces import ConfigError

from ._config import CLIPConfig, EncoderConfig, GPTConfig, MLPConfig, ModelConfig

# A container's memory limit: cgroup v2, then v1 (a number, or "max" for none).
CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def parameter_count(m: ModelConfig, vocab_size: int | None = None) -> int | None:
    """The parameters the built-in model of ``m`` holds (``vocab_size``: a GPT's, taken
    from the tokenizer when the config leaves it unset); None for an imported model."""
    if isinstance(m, MLPConfig):
        return _linears([m.in_features, *m.hidden, m.num_classes])
    if isinstance(m, EncoderConfig):  # Linear, LayerNorm, Linear, Linear
        h = m.hidden
        return _linears([m.in_features, h]) + 2 * h + _linears([h, h, m.projection])
    if isinstance(m, GPTConfig):
        v, e = (m.vocab_size or vocab_size or 0), m.n_embd
        # Per block: two LayerNorms, qkv and output projections, a 4x MLP.
        block = 2 * 2 * e + _linears([e, 3 * e]) + _linears([e, e]) + _linears([e, 4 * e, e])
        # Token and position embeddings, the blocks, the last LayerNorm, an untied head.
        return v * e + m.block_size * e + m.n_layer * block + 2 * e + e * v
    if isinstance(m, CLIPConfig):  # image MLP, token embedding, text projection, scale
        image = _linears([m.image_features, m.hidden, m.embed_dim])
        return image + m.vocab_size * m.hidden + _linears([m.hidden, m.embed_dim]) + 1
    return None


def check_fits(m: ModelConfig, vocab_size: int | None = None) -> None:
    """A ConfigError when the weights alone of ``m`` outgrow this machine's memory (or its
    container's), once per process that torchrun started on it (each builds its copy)."""
    count, memory = parameter_count(m, vocab_size), _memory_bytes()
    copies = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if count is None or memory is None or count * 4 * copies <= memory:
        return
    sizes = ", ".join(
        f"{name}={value}"
        for name, value in m.model_dump().items()
        if name not in ("kind", "dropout") and value is not None
    )
    each = f", in each of {copies} processes," if copies > 1 else ""
    raise ConfigError(
        f"model: the {m.kind!r} model ({sizes}) would hold {count:.3g} parameters, "
        f"{count * 4 / 2**30:.3g} GiB in fp32{each} more than this machine's "
        f"{memory / 2**30:.3g} GiB of memory"
    )


def _linears(widths: list[int]) -> int:
    """Weights and biases of Linear layers from each width to the next."""
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def _memory_bytes() -> int | None:
    """Physical memory, or a container's limit where lower (cgroup v2, then v1)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return None
    for limit in CGROUP_LIMITS:
        try:
            text = limit.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max": none
            memory = min(memory, int(text))
    return memory
