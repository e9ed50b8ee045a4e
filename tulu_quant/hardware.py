"""What this machine's CPU can compute fast, and the dtype choices that follow from it.

CPUs differ in a way that decides whether half precision is a speed-up or a disaster. With native BF16 instructions
(x86 AVX512-BF16 or AMX, Arm's BF16 extension) a bfloat16 matmul runs at least as fast as float32 at half the memory.
Without them (AMD Zen 2/3, most Intel client chips, every AVX2-only machine) torch emulates it: measured with torch
2.13 on a 2-core AVX2-only AMD EPYC, a 4096x576 @ 576x1536 matmul took 0.08 s in float32, 6.7 s in bfloat16 and 5.8 s
in float16 (docs/benchmarks.md). So every "auto" compute dtype on CPU comes from ``cpu_compute_dtype()``:

    bfloat16   where the CPU has native BF16 (read from its feature flags)
    float32    everywhere else
    flags unreadable (not Linux): a 256^3 matmul probe in both dtypes, timed once and cached per CPU and torch version

The facts also go into every record that depends on them (quantization.json, the model card, benchmark headers).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Feature flags that matter for our dtype and kernel choices, as /proc/cpuinfo spells them (x86 "flags",
# Arm "Features").
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
FP16_FLAGS = ("avx512_fp16", "amx_fp16", "fphp")
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
REPORTED_FLAGS = ("avx2", "fma", "f16c", "avx512f", *BF16_FLAGS, *FP16_FLAGS, *INT8_DOT_FLAGS, "amx_tile", "sve")
# A bfloat16 matmul this much slower than float32 (probe) means emulated BF16.
PROBE_SLOWDOWN = 1.3


@dataclass(frozen=True)
class CpuInfo:
    name: str  # the model name the CPU reports, e.g. "AMD EPYC" or "Intel(R) Xeon(R) Platinum 8480+"
    arch: str  # platform.machine(): x86_64, aarch64, arm64
    cores: int
    capability: str  # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, DEFAULT, ...
    flags: frozenset[str] | None  # the REPORTED_FLAGS present; None when the OS does not say

    def has(self, names: tuple[str, ...]) -> bool:
        return bool(self.flags) and any(flag in self.flags for flag in names)

    @property
    def native_bf16(self) -> bool:
        return self.has(BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        return self.has(INT8_DOT_FLAGS)

    def describe(self) -> str:
        """One line for logs and benchmark headers: model, arch, cores, torch's capability and the relevant flags."""
        flags = "flags unknown" if self.flags is None else ", ".join(sorted(self.flags)) or "none of interest"
        return f"{self.name} ({self.arch}, {self.cores} cores; torch CPU capability {self.capability}; {flags})"

    def record(self) -> dict:
        return {
            "name": self.name,
            "arch": self.arch,
            "cores": self.cores,
            "torch_capability": self.capability,
            "flags": None if self.flags is None else sorted(self.flags),
        }


# ------------------------------------------------------------------------------------------------------ reading


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str] | None]:
    """(model name, relevant flags) from /proc/cpuinfo text (x86 'model name'/'flags', Arm 'Features')."""
    name, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and name is None:
            name = value.strip() or None
        elif key in ("flags", "features") and flags is None:
            flags = frozenset(value.split()) & frozenset(REPORTED_FLAGS)
    return name, flags


def torch_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    name, flags = None, None
    try:
        name, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        pass
    return CpuInfo(
        name or platform.processor() or "unknown CPU",
        platform.machine(),
        os.cpu_count() or 1,
        torch_capability(),
        flags,
    )


# ------------------------------------------------------------------------------------------------------ choices


def matmul_seconds(dtype: str, size: int = 256, repeats: int = 5) -> float:
    """Best-of-`repeats` seconds of one size^3 matmul in dtype (after a warm-up call)."""
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def probed_bf16(cpu: CpuInfo) -> bool:
    """Whether bfloat16 matmuls run at float32 speed here, timed once and cached per CPU and torch version."""
    import torch

    from .fetch import cache_dir

    path = cache_dir() / "hardware.json"
    key = f"{cpu.name}|{cpu.arch}|{torch.__version__}"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if key not in cache:
        ratio = matmul_seconds("bfloat16") / matmul_seconds("float32")
        cache[key] = {"bf16_over_fp32": round(ratio, 3)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache, indent=2))
        log.debug("hardware probe: bfloat16 matmul %.2fx the time of float32 on %s", ratio, cpu.name)
    return cache[key]["bf16_over_fp32"] <= PROBE_SLOWDOWN


def cpu_compute_dtype(cpu: CpuInfo | None = None) -> tuple[str, str]:
    """(dtype, why) for computing on this CPU: bfloat16 with native BF16, float32 otherwise."""
    cpu = cpu or cpu_info()
    if cpu.flags is None:
        how = "a timed matmul probe; the OS reports no CPU flags"
        if probed_bf16(cpu):
            return "bfloat16", f"{cpu.name} runs bfloat16 matmuls at float32 speed ({how})"
        return "float32", f"bfloat16 matmuls are emulated and slow on {cpu.name} ({how})"
    if cpu.native_bf16:
        found = ", ".join(sorted(cpu.flags & frozenset(BF16_FLAGS)))
        return "bfloat16", f"{cpu.name} has native BF16 ({found}): as fast as float32 at half the memory"
    return "float32", (
        f"{cpu.name} has no native BF16 (AVX512-BF16, AMX or Arm BF16; torch capability {cpu.capability}), where "
        "bfloat16 matmuls are emulated and tens of times slower"
    )
