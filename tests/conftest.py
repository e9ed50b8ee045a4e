"""Suite-wide settings. Helpers for building tiny checkpoints live in tests/tiny.py."""

import os
from pathlib import Path

import pytest
from shared_data import SHARED_DATA

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # GPTQModel refuses 2-core machines without it


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data sets that no package carries (BBH, AlpacaEval's davinci-003 outputs, GSM CoT exemplars), kept
    beside the checkout in ../shared/data (or TULU_QUANT_SHARED_DATA); never copied into the repository."""
    if not (SHARED_DATA / "bbh").is_dir():
        pytest.skip(f"needs the shared benchmark data folder at {SHARED_DATA.resolve()} (set TULU_QUANT_SHARED_DATA)")
    return SHARED_DATA.resolve()
