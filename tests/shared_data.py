"""Where the benchmark data sets that no package carries are for tests: ../shared/data beside the checkout, or
$TULU_QUANT_SHARED_DATA (import as `from shared_data import SHARED_DATA`)."""

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("TULU_QUANT_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
