"""What every benchmark shares: the checkout's root, the machine it ran on, the tulu-quant command, the load."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    """The machine in one line: CPU model, the flags that decide dtypes and kernels, torch's CPU capability, cores,
    RAM and OS (a CPU-bound figure means nothing without them)."""
    import psutil

    from tulu_quant.hardware import cpu_info

    cpu = cpu_info()
    return (
        f"{cpu.describe()}, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}"
    )


def machine_record() -> dict:
    import psutil

    from tulu_quant.hardware import cpu_info

    return {**cpu_info().record(), "ram_bytes": psutil.virtual_memory().total, "os": platform.platform()}


def tool(*args: str) -> list[str]:
    """The tulu-quant command of this environment with its arguments."""
    return [str(Path(sys.executable).parent / "tulu-quant"), *args]


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: a benchmark's seconds are comparable only when they are low."""
    return [round(x, 2) for x in os.getloadavg()]


def shown(load: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in load)
