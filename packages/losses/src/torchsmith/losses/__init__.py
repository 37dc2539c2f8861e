"""torchsmith.losses: one consolidated, verified loss library with a registry.

    >>> from torchsmith.losses import get_loss
    >>> loss_fn = get_loss("ntxent", temperature=0.5)
    >>> loss = loss_fn(z1, z2)              # a scalar tensor
    >>> loss_fn.loss_output()               # LossOutput(loss=..., components={...})

Every loss is a :class:`LossModule`; names: see :func:`list_losses`.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-losses", INTERFACES_MAJOR)

from ._base import LogitScale, LossModule, normalize  # noqa: E402
from ._classification import CrossEntropyLoss, FocalLoss  # noqa: E402
from ._clip import ClipLoss, CrossModalLoss, SigLipLoss  # noqa: E402
from ._distributed import gather  # noqa: E402
from ._fusion import FusionLoss  # noqa: E402
from ._metric import SupConLoss, TripletLoss  # noqa: E402
from ._ntxent import MoCoLoss, NTXentLoss  # noqa: E402
from ._projection import (  # noqa: E402
    ProjectionHead,
    barlow_twins_projector,
    byol_projection_head,
    clip_projection,
    moco_v2_projection_head,
    simclr_projection_head,
    vicreg_expander,
)
from ._redundancy import BarlowTwinsLoss, VICRegLoss  # noqa: E402
from ._registry import get_loss, list_losses, register_loss  # noqa: E402

__version__ = _version("torchsmith-losses")

__all__ = [
    # registry
    "get_loss",
    "list_losses",
    "register_loss",
    # shared parts
    "LossModule",
    "LogitScale",
    "normalize",
    "gather",
    # projection heads
    "ProjectionHead",
    "simclr_projection_head",
    "moco_v2_projection_head",
    "byol_projection_head",
    "barlow_twins_projector",
    "vicreg_expander",
    "clip_projection",
    # losses
    "CrossEntropyLoss",
    "FocalLoss",
    "ClipLoss",
    "SigLipLoss",
    "CrossModalLoss",
    "NTXentLoss",
    "MoCoLoss",
    "SupConLoss",
    "TripletLoss",
    "VICRegLoss",
    "BarlowTwinsLoss",
    "FusionLoss",
    # metadata
    "INTERFACES_MAJOR",
    "__version__",
]
