"""The public DSP namespace: `from automix.dsp import compressor, limiter, ...`."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import automix.dsp

DSP_DIR = Path(automix.dsp.__file__).parent
# What automix.dsp's modules may import from the project: each other and the unit helpers, never the
# meters or the mixer (an import cycle, and a DSP layer that depends on its users).
ALLOWED_PROJECT_IMPORTS = ("automix.dsp", "automix.units")


@pytest.mark.parametrize("name", automix.dsp.__all__)
def test_every_public_name_imports_and_is_callable(name):
    assert callable(getattr(automix.dsp, name))


def test_a_fresh_interpreter_imports_the_namespace_on_its_own():
    code = "from automix.dsp import compressor, limiter, master_section; import automix; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("path", sorted(DSP_DIR.glob("*.py")), ids=lambda p: p.name)
def test_the_dsp_modules_import_nothing_of_the_project_above_them(path):
    imported = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
        elif isinstance(node, ast.Import):
            imported.extend(alias.name for alias in node.names)
    project = [name for name in imported if name == "automix" or name.startswith("automix.")]
    assert all(name.startswith(ALLOWED_PROJECT_IMPORTS) for name in project), project


def test_the_docstring_example_limits_a_compressed_signal_under_its_ceiling():
    """The module docstring's chain on loud noise: every sample under the -1 dBTP ceiling (a sample peak
    never exceeds the true peak)."""
    x = torch.randn(2, 44100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    squashed = automix.dsp.compressor(
        x, 44100, threshold_db=-20.0, ratio=4.0, attack_ms=5.0, release_ms=100.0, makeup_db=0.0
    )
    mastered = automix.dsp.limiter(squashed, 44100, ceiling_dbtp=-1.0)
    assert mastered.shape == x.shape
    assert mastered.abs().max() <= 10 ** (-1.0 / 20)
