"""The code base stays formatted and lint-clean with ruff (configured in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True
    )


def test_ruff_check_passes():
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout[-3000:]


def test_ruff_format_leaves_every_file_unchanged():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout[-3000:]
