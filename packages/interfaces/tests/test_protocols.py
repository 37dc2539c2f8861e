import subprocess
import sys
from pathlib import Path
from typing import Any

import torchsmith.interfaces as ti


def test_plain_objects_satisfy_protocols() -> None:
    class Sink:
        def __init__(self) -> None:
            self.events: list[Any] = []

        def emit(self, event: Any) -> None:
            self.events.append(event)

    class Gen:
        def families(self) -> list[str]:
            return ["gpt2"]

        def generate(self, spec: Any, out_dir: Path, *, backend: str = "cpu") -> Any:
            return None

    assert isinstance(Sink(), ti.EventSink)
    assert isinstance(Gen(), ti.ModelGenerator)
    assert isinstance([1, 2, 3], ti.DataSource)
    assert not isinstance(object(), ti.EventSink)


def test_task_output_holds_loss_and_count() -> None:
    out = ti.TaskOutput(loss=1.5, num_items=4)  # type: ignore[arg-type]
    assert out.num_items == 4 and out.metrics == {} and out.loss_weight is None
    assert out.weight == 4  # the loss is a mean over its items
    weighted = ti.TaskOutput(loss=1.5, num_items=4, loss_weight=2.5)  # type: ignore[arg-type]
    assert weighted.weight == 2.5  # a class-weighted mean divides by the targets' weight


def test_import_does_not_load_torch_or_pydantic() -> None:
    code = (
        "import sys, torchsmith.interfaces;print('torch' in sys.modules, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_all_is_exact() -> None:
    public = {name for name in dir(ti) if not name.startswith("_")}
    public |= {"Record", "TrainingEvent", "LossOutput", "CudaDevice", "HardwareInfo"}
    public |= {"Statistics", "Environment", "BenchmarkResult", "GeneratedFile"}
    public |= {"GeneratedArtifact", "JobStatus", "KNOWN_COMMANDS", "installed_commands"}
    public -= {"annotations", "import_module", "TYPE_CHECKING", "Any"}
    assert set(ti.__all__) == public
    for name in ti.__all__:
        assert getattr(ti, name) is not None
