"""Suite-wide settings. Helpers for building tiny checkpoints live in tests/tiny.py."""

import os

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # GPTQModel refuses 2-core machines without it
