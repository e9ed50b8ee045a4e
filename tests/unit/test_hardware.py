"""The CPU's facts and the compute dtype "auto" picks from them (tulu_quant/hardware.py)."""

from __future__ import annotations

import pytest

from tulu_quant import hardware
from tulu_quant.hardware import CpuInfo, cpu_compute_dtype, parse_cpuinfo

ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
SAPPHIRE = (
    "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile\n"
)
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd asimddp bf16 i8mm sve\nCPU part\t: 0xd40\n"


def cpu(flags, capability="AVX2", name="Test CPU") -> CpuInfo:
    return CpuInfo(name, "x86_64", 2, capability, None if flags is None else frozenset(flags))


@pytest.mark.parametrize(
    "text, name, flags",
    [
        (ZEN3, "AMD EPYC 7B13", {"avx2", "fma", "f16c"}),
        (
            SAPPHIRE,
            "Intel(R) Xeon(R) Platinum 8480+",
            {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"},
        ),
        (GRAVITON3, None, {"asimddp", "bf16", "i8mm", "sve"}),
    ],
)
def test_cpuinfo_is_read_for_the_flags_that_matter(text, name, flags):
    assert parse_cpuinfo(text) == (name, frozenset(flags))


@pytest.mark.parametrize(
    "flags, capability, expected",
    [
        ({"avx2", "fma"}, "AVX2", "float32"),  # AMD Zen 2/3, Intel client chips: bfloat16 is emulated
        ({"avx2", "avx512f"}, "AVX512", "float32"),  # AVX512 without its BF16 extension (Skylake-X, Ice Lake)
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", "bfloat16"),  # Zen 4, Cooper Lake
        ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, "AVX512", "bfloat16"),  # Sapphire Rapids
        ({"asimd", "bf16"}, "DEFAULT", "bfloat16"),  # Arm with BF16 (Graviton 3)
        ({"asimd"}, "DEFAULT", "float32"),  # Arm without it
    ],
)
def test_auto_dtype_for_each_capability(flags, capability, expected):
    dtype, why = cpu_compute_dtype(cpu(flags, capability))
    assert dtype == expected and "Test CPU" in why
    assert ("no native BF16" in why) == (expected == "float32")


def test_without_flags_a_probe_decides_once_and_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("TULU_QUANT_CACHE", str(tmp_path))
    timings = {"bfloat16": 3.0, "float32": 0.1}
    calls = []

    def timed(dtype, size=256, repeats=5):
        calls.append(dtype)
        return timings[dtype]

    monkeypatch.setattr(hardware, "matmul_seconds", timed)
    assert cpu_compute_dtype(cpu(None))[0] == "float32" and len(calls) == 2
    timings["bfloat16"] = 0.05  # a different answer now would not be asked for: the cache holds the first
    assert cpu_compute_dtype(cpu(None))[0] == "float32" and len(calls) == 2
    assert cpu_compute_dtype(cpu(None, name="Other CPU"))[0] == "bfloat16" and len(calls) == 4


def test_this_machine_is_described_with_model_flags_and_torch_capability():
    import torch

    info = hardware.cpu_info()
    assert info.capability == torch.backends.cpu.get_cpu_capability()
    assert info.name in info.describe() and "torch CPU capability" in info.describe()
    assert set(info.record()) == {"name", "arch", "cores", "torch_capability", "flags"}


def test_auto_agrees_with_bfloat16_and_float32_timed_here():
    """Measured in one run on the machine running the test: where bfloat16 matmuls are several times slower than
    float32's (a CPU without native BF16: tens of times), auto must be float32; where auto is bfloat16, its matmul must
    be within 1.3x of float32's. (Timing float32 against itself would only measure noise.)"""
    dtype, _ = cpu_compute_dtype()
    bf16, fp32 = (hardware.matmul_seconds(d, size=384, repeats=9) for d in ("bfloat16", "float32"))
    shown = f"bfloat16 matmul {bf16 * 1e3:.2f} ms vs float32 {fp32 * 1e3:.2f} ms, auto {dtype}"
    if bf16 > 3 * fp32:
        assert dtype == "float32", shown
    if dtype == "bfloat16":
        assert bf16 <= 1.3 * fp32, shown
