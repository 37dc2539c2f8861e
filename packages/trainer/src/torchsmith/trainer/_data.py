"""Data: a resumable sampler, DataLoader defaults, and the stream of batches the loop reads.

Exact resume needs the data order to be a pure function of (seed, epoch) and
the position to be a count, not an iterator: :class:`ResumableSampler` draws
each epoch's permutation from its own generator and starts at any batch in
O(1), and :class:`BatchStream` counts the batches handed to the loop (workers
may have prefetched further; those do not count).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import warnings
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from torchsmith.interfaces import DataError


class ResumableSampler(Sampler[int]):
    """Indices of one process's share of each global batch, from any batch of any epoch.

    Global batch ``s`` of an epoch is ``perm[s*G:(s+1)*G]`` with ``G = batch_size *
    world_size``; rank ``r`` takes the ``r``-th slice of ``batch_size`` of it, so the
    union over ranks is exactly what one process with batch ``G`` would see.
    The incomplete last global batch is dropped: shuffled, each epoch leaves out other
    examples; in order (``shuffle=False``) the same last ones never train, which is warned
    about.

    With ``tag_epochs`` each index is yielded as ``epoch * num_samples + index``, so a
    DataLoader worker knows which epoch a batch belongs to (see :class:`BatchSeeded`).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        tag_epochs: bool = False,
    ) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.tag_epochs = tag_epochs
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        if batch_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"ResumableSampler needs batch_size > 0 and 0 <= rank < world_size, "
                f"not batch_size={batch_size}, rank={rank}, world_size={world_size}"
            )
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{num_samples} samples make no global batch of {batch_size} x {world_size}"
            )
        left_out = num_samples - self.batches_per_epoch * batch_size * world_size
        if not shuffle and left_out and rank == 0:
            warnings.warn(
                f"shuffle=False (loader.shuffle): the last {left_out} of the {num_samples} "
                f"examples never train, since an epoch is whole batches of {batch_size} x "
                f"{world_size} process(es); shuffle, or make the data a multiple of that",
                stacklevel=2,
            )

    @property
    def batches_per_epoch(self) -> int:
        """Whole global batches an epoch holds, this rank's share of each (the rest drops)."""
        return self.num_samples // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Start the next pass at batch ``start_batch`` of ``epoch``, skipping nothing lazily."""
        if epoch < 0 or start_batch < 0:
            raise ValueError(f"a position is never negative: epoch {epoch}, batch {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.num_samples, generator=generator)
        else:
            perm = torch.arange(self.num_samples)
        nb, b, w = self.batches_per_epoch, self.batch_size, self.world_size
        mine = perm[: nb * w * b].view(nb, w, b)[self.start_batch :, self.rank]
        if self.tag_epochs:
            mine = mine + self.epoch * self.num_samples
        return iter(mine.reshape(-1).tolist())

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch) * self.batch_size


def seed_worker(worker_id: int) -> None:
    """Seed python and numpy in a DataLoader worker from its torch seed (base seed + id)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class BatchSeeded(Dataset[Any]):
    """A dataset whose randomness in DataLoader workers depends on the batch, not the worker.

    A worker's RNG streams advance with every batch it serves, so a resumed run (fresh
    workers, starting mid-epoch) would draw different augmentations. Before each batch this
    wrapper reseeds python, numpy and torch from (seed, epoch, first index of the batch),
    which identifies the batch within a run, so each batch draws the same numbers whichever
    worker serves it and however the run was interrupted. It reads epoch-tagged indices
    (``ResumableSampler(tag_epochs=True)``); :func:`build_loader` sets both up.
    """

    def __init__(self, dataset: Dataset[Any], num_samples: int, seed: int = 0) -> None:
        self.dataset, self.num_samples, self.seed = dataset, num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: int) -> Any:
        self._reseed(key)
        return self.dataset[key % self.num_samples]

    def __getitems__(self, keys: list[int]) -> Any:
        self._reseed(keys[0])
        keys = [key % self.num_samples for key in keys]
        if isinstance(self.dataset, Gathered):  # the batch, collated already
            return self.dataset.__getitems__(keys)
        return [self.dataset[key] for key in keys]

    def _reseed(self, first_key: int) -> None:
        epoch, first = divmod(first_key, self.num_samples)
        digest = hashlib.blake2b(f"{self.seed}:{epoch}:{first}".encode(), digest_size=8).digest()
        seed = int.from_bytes(digest, "little") >> 1  # < 2**63, as torch.manual_seed wants
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)


class Gathered(Dataset[Any]):
    """A tensor-backed dataset read a whole batch at a time: one ``index_select`` per tensor.

    A DataLoader reads a batch item by item and stacks the items: about 100 us for 32
    digits, a fifth of a digits-MLP step. A :class:`~torch.utils.data.TensorDataset`
    (exactly that type: a subclass may change ``__getitem__``), or a dataset with a
    ``gather_batch(indices) -> list[Tensor]`` method (:class:`TokenBlocks` has one), gives
    the batch at once in about 10 us. The batch is the list the default collate would
    make, equal value for value, so the loader passes it on as it is:
    ``DataLoader(Gathered(dataset), batch_size, collate_fn=Gathered.collate)``.
    :func:`build_loader` does this for every dataset that :meth:`supports` it.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        if not self.supports(dataset):
            name = type(dataset).__name__
            raise TypeError(f"{name} is neither a TensorDataset nor has a gather_batch method")
        self.dataset = dataset

    @staticmethod
    def supports(dataset: Dataset[Any]) -> bool:
        """Whether ``dataset`` can be read a batch at a time: a plain ``TensorDataset`` (not a
        subclass, which may change ``__getitem__``) or one with ``gather_batch``."""
        return type(dataset) is TensorDataset or callable(getattr(dataset, "gather_batch", None))

    def __len__(self) -> int:
        return dataset_length(self.dataset)

    def __getitem__(self, key: int) -> Any:
        return self.dataset[key]

    @staticmethod
    def collate(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        """The loader's ``collate_fn``: the batch is collated already."""
        return batch

    def __getitems__(self, keys: list[int]) -> list[torch.Tensor]:
        if type(self.dataset) is TensorDataset:
            index = torch.tensor(keys)
            return [
                t.index_select(0, index if t.is_cpu else index.to(t.device))
                for t in self.dataset.tensors
            ]
        return self.dataset.gather_batch(keys)  # type: ignore[attr-defined, no-any-return]


def build_loader(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    seed: int = 0,
    pin_memory: bool = False,
    drop_last: bool | None = None,
) -> DataLoader[Any]:
    """A DataLoader with the defaults that matter: own generator, seeded workers, pinning,
    and a whole batch read at once from a tensor-backed dataset (:class:`Gathered`).

    The loader's own generator keeps iterator creation from consuming the global
    torch RNG (DataLoader draws a worker base seed on every ``iter()``), which
    would otherwise make a resumed run drift from an uninterrupted one. With workers and
    a :class:`ResumableSampler`, the dataset is wrapped in :class:`BatchSeeded` (and the
    sampler tags its indices with the epoch, so it then serves this loader only), so randomness
    drawn in workers resumes exactly.
    Without a sampler the order is the dataset's and, unless ``drop_last=False`` (as an
    evaluation wants), the incomplete last batch is dropped; a ResumableSampler always drops
    it, and ``drop_last=False`` with one is refused.
    """
    if sampler is not None and drop_last is False and isinstance(sampler, ResumableSampler):
        raise ValueError(
            "drop_last=False: a ResumableSampler yields whole batches only (an epoch's last, "
            "incomplete batch drops whatever the loader says)"
        )
    workers = num_workers > 0
    collate = None
    if Gathered.supports(dataset):
        dataset, collate = Gathered(dataset), Gathered.collate
    if workers and isinstance(sampler, ResumableSampler):
        sampler.tag_epochs = True
        dataset = BatchSeeded(dataset, sampler.num_samples, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=sampler is None if drop_last is None else drop_last,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=workers,
        prefetch_factor=prefetch_factor,  # torch refuses one without workers
        worker_init_fn=seed_worker if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )


class BatchStream:
    """Batches forever, epoch after epoch, with the position the loop has reached.

    ``epoch`` and ``batches_done`` count what was handed out; saving them
    (:meth:`state_dict`) and calling :meth:`load_state_dict` restarts exactly there,
    without reading skipped batches. ``loader`` must draw its order from ``sampler``
    (``build_loader(..., sampler=sampler)``): the stream resumes by moving the sampler.
    Batches come one at a time (``next``), or as a run of them from one epoch
    (:meth:`take`, then :meth:`advance` by the number used).
    """

    def __init__(self, loader: DataLoader[Any], sampler: ResumableSampler, seed: int = 0) -> None:
        if loader.sampler is not sampler:
            raise ValueError(
                "the loader does not draw from this sampler, so resuming could not move it; "
                "build it with build_loader(dataset, batch_size, sampler=sampler)"
            )
        if loader.batch_size is None:
            raise ValueError(
                "the loader yields single examples (batch_size=None), but the sampler counts "
                f"batches of {sampler.batch_size}: build it with build_loader(dataset, "
                f"{sampler.batch_size}, sampler=sampler)"
            )
        if loader.batch_size != sampler.batch_size:
            raise ValueError(
                f"the loader's batch_size {loader.batch_size} differs from its sampler's "
                f"{sampler.batch_size}: epochs would not have sampler.batches_per_epoch batches"
            )
        self.loader, self.sampler, self.seed = loader, sampler, seed
        self.epoch, self.batches_done = 0, 0
        self._iterator: Iterator[Any] | None = None

    @property
    def batches_per_epoch(self) -> int:
        """The sampler's: batches in one epoch."""
        return self.sampler.batches_per_epoch

    @property
    def next_batch(self) -> int:
        """The index in its epoch of the batch to come (0 once an epoch has ended)."""
        return self.batches_done % self.batches_per_epoch

    @property
    def epochs_completed(self) -> int:
        """Whole epochs handed out, counting one whose last batch was just taken."""
        return self.epoch + (self.batches_done >= self.batches_per_epoch)

    def state_dict(self) -> dict[str, int]:
        """The position: ``epoch``, and ``batches_done`` in it (equal to an epoch's batches
        once its last batch is out and the next epoch has not started), with the
        ``examples`` and ``batch_size`` it counts in, which a resume must have too."""
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "examples": self.sampler.num_samples,
            "batch_size": self.sampler.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Go to the position :meth:`state_dict` gave; the next batch is the one after it
        (:meth:`check_counts` first)."""
        epoch, done = state.get("epoch"), state.get("batches_done")
        if not (isinstance(epoch, int) and isinstance(done, int) and epoch >= 0 and done >= 0):
            raise ValueError(
                "the data position needs non-negative integers 'epoch' and 'batches_done', "
                f"not {dict(state)!r}"
            )
        self.check_counts(state)
        if done > self.batches_per_epoch:
            raise ValueError(
                f"batches_done {done} is beyond an epoch's {self.batches_per_epoch} batches: "
                "the state is of another dataset or batch size"
            )
        self.epoch, self.batches_done = epoch, done
        self._iterator = None

    def check_counts(self, state: Mapping[str, Any], source: object = None) -> None:
        """A DataError (naming ``source``, a checkpoint, if given) when ``state`` was counted
        over another number of examples or batch size than this stream's: its count of
        batches would start elsewhere in the epoch, skipping or repeating examples. A state
        saved before these two were kept has neither, and passes."""
        examples, size = self.sampler.num_samples, self.sampler.batch_size
        saved = (state.get("examples", examples), state.get("batch_size", size))
        if not all(type(n) is int for n in saved):
            raise ValueError(f"the data position's examples and batch_size: integers, not {saved}")
        if saved != (examples, size):
            where = f"cannot resume from {source}: " if source is not None else ""
            raise DataError(
                f"{where}the data position was counted over {saved[0]} examples in batches of "
                f"{saved[1]}, and this data has {examples} in batches of {size}: the number of "
                "examples or the batch size changed; resume with the data it trained on, or "
                "start a new run"
            )

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        iterator = self._iterator
        if iterator is None:  # not `or`: a DataLoader iterator's truth is its len()
            iterator = self._start_epoch()
        try:
            batch = next(iterator)
        except StopIteration:
            self._next_epoch()
            return next(self)
        self.batches_done += 1
        return batch

    def take(self, count: int) -> Iterator[Any]:
        """Up to ``count`` next batches, all of one epoch, straight from its DataLoader
        iterator: a ``next`` per batch through this class would cost a Python call each.

        They are not counted until :meth:`advance` says how many were used.
        """
        if self.batches_done >= self.batches_per_epoch:  # the last epoch ended: start the next
            self._next_epoch()
        iterator = self._iterator if self._iterator is not None else self._start_epoch()
        return itertools.islice(iterator, count)

    def advance(self, used: int, read_all: bool = True) -> None:
        """Count ``used`` batches of the last :meth:`take`; with ``read_all=False`` (a step
        raised, so a batch may have been read and not used) the next batch is read again."""
        self.batches_done += used
        if not read_all:
            self._iterator = None  # restart at batches_done: the sampler starts anywhere

    def _next_epoch(self) -> None:
        self.epoch, self.batches_done, self._iterator = self.epoch + 1, 0, None

    def _start_epoch(self) -> Iterator[Any]:
        self.sampler.set_position(self.epoch, self.batches_done)
        if self.loader.generator is not None:
            self.loader.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        self._iterator = iter(self.loader)
        return self._iterator


def move_to(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``batch`` (tensors, or tuples/lists/dicts of them) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to(b, device, non_blocking) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    return batch


def dataset_length(dataset: Dataset[Any]) -> int:
    if not isinstance(dataset, Sized):
        raise TypeError("the training dataset must have a length for the resumable sampler")
    return len(dataset)
