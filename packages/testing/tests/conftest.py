"""Shared setup of torchsmith-testing's own tests."""

from __future__ import annotations

# pytester's in-process runs drop the modules first imported during a run. torch imports
# _dynamo lazily (from optimizer.step, torch.compile); importing it a second time aborts the
# interpreter, so it is imported once here, before any in-process run.
import torch._dynamo  # noqa: F401
