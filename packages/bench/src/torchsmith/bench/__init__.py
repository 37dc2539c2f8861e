"""torchsmith.bench

PyTorch benchmarks with sound statistics, DuckDB history and CI reports.

    @benchmark("name", params={...}, baseline=None)   register a case
    run(cases, store=BenchStore(path)) -> run id       time and store a run
    compare(store, base, head) -> Comparison           ratio, CI, p-value, verdict per case
    html_report(store, run) / markdown_summary(...)    reports

Errors (all ``torchsmith.interfaces.TorchsmithError``):
    StoreError          a bench database that cannot be opened, read or written
      RunNotFoundError  no run answers a reference (also a LookupError)
    ComparisonError     runs that cannot be compared as asked
    CaseError           a case that failed in setup or while timed
    MemoryProbeError    the child process measuring peak RSS failed
"""

from __future__ import annotations

from importlib.metadata import version as _version

from torchsmith.interfaces import require_interfaces

INTERFACES_MAJOR = 1
require_interfaces("torchsmith-bench", INTERFACES_MAJOR)

from ._changepoint import change_points  # noqa: E402
from ._compare import (  # noqa: E402
    CaseComparison,
    Comparison,
    History,
    compare,
    compare_history,
    compare_results,
    history,
)
from ._environment import capture_environment  # noqa: E402
from ._errors import (  # noqa: E402
    CaseError,
    ComparisonError,
    MemoryProbeError,
    RunNotFoundError,
    StoreError,
)
from ._exchange import RunArchive, export_runs, import_runs, read_archive  # noqa: E402
from ._html import html_report, write_text  # noqa: E402
from ._markdown import markdown_summary  # noqa: E402
from ._registry import (  # noqa: E402
    REGISTRY,
    Case,
    Registry,
    benchmark,
    case_key,
    discover,
    load_entry_points,
)
from ._runner import measure_cases, run  # noqa: E402
from ._stats import (  # noqa: E402
    Decision,
    bootstrap_median_ci,
    decide,
    mann_whitney_u,
    ratio_of_medians_ci,
    summarize,
)
from ._store import BenchStore, HistoryPoint, RunInfo  # noqa: E402
from ._timer import MeasureConfig, Measurement, measure, measure_interleaved  # noqa: E402

__version__ = _version("torchsmith-bench")

__all__ = [
    "INTERFACES_MAJOR",
    "__version__",
    # defining
    "benchmark",
    "Case",
    "Registry",
    "REGISTRY",
    "case_key",
    "discover",
    "load_entry_points",
    # measuring
    "MeasureConfig",
    "Measurement",
    "measure",
    "measure_interleaved",
    "measure_cases",
    "run",
    "capture_environment",
    # storing
    "BenchStore",
    "RunInfo",
    "HistoryPoint",
    "RunArchive",
    "export_runs",
    "import_runs",
    "read_archive",
    # deciding
    "Decision",
    "decide",
    "summarize",
    "bootstrap_median_ci",
    "ratio_of_medians_ci",
    "mann_whitney_u",
    "change_points",
    "compare",
    "compare_results",
    "compare_history",
    "Comparison",
    "CaseComparison",
    "history",
    "History",
    # reporting
    "html_report",
    "markdown_summary",
    "write_text",
    # errors
    "RunNotFoundError",
    "StoreError",
    "ComparisonError",
    "CaseError",
    "MemoryProbeError",
]
