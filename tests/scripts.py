"""Loading the repository's scripts (benchmarks/, data/), which are not a package, for their tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str | None = None) -> ModuleType:
    """The script at `relative_path` under the repository root, imported as a module named `name` (by
    default its stem with "_under_test")."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(name or f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
