"""Run the installed ``hf-probe`` console script, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def hf_probe_path() -> str:
    """The ``hf-probe`` beside this interpreter (``pip install -e .`` puts it there), else the one on ``PATH``."""
    path = shutil.which("hf-probe", path=os.path.dirname(sys.executable)) or shutil.which("hf-probe")
    if path is None:
        raise AssertionError(
            "The hf-probe console script is not installed: run `pip install -e .` in the source tree (it is declared "
            "in pyproject.toml [project.scripts])."
        )
    return path


def hf_probe(*args: str, check: bool = True, timeout: float = 300) -> str:
    """Run ``hf-probe ARGS`` and return its standard output (standard error too when ``check`` is off)."""
    result = subprocess.run(
        [hf_probe_path(), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"}
    )
    if check and result.returncode != 0:
        raise AssertionError(f"hf-probe {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout if check else result.stdout + result.stderr
