"""plan: memory estimates from config.json, checked against published sizes and a measured GPTQModel run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tulu_quant import plan

CONFIG_13B = Path(__file__).resolve().parents[2] / "configs" / "tulu-13b.yaml"

GIB = 2**30


def test_13b_4bit_g128_weights_match_the_published_checkpoint():
    # TheBloke/tulu-13B-GPTQ main (4-bit, group 128, act order off): 7.26 GB of safetensors.
    weights = plan.quantized_weight_bytes(plan.Shape.from_config(plan.LLAMA1["13B"]), bits=4, group_size=128)
    assert weights / 1e9 == pytest.approx(7.26, rel=0.01)


def test_llama1_parameter_counts():
    counts = {name: plan.Shape.from_config(c).params / 1e9 for name, c in plan.LLAMA1.items()}
    # LLaMA-1 paper: 6.7, 13.0, 32.5, 65.2 billion parameters
    assert counts["7B"] == pytest.approx(6.74, rel=0.01) and counts["13B"] == pytest.approx(13.02, rel=0.01)
    assert counts["30B"] == pytest.approx(32.5, rel=0.01) and counts["65B"] == pytest.approx(65.3, rel=0.01)


def test_kv_cache_of_13b_at_2048_tokens():
    shape = plan.Shape.from_config(plan.LLAMA1["13B"])
    assert plan.kv_cache_bytes(shape, 2048, 1) == 2 * 40 * 5120 * 2048 * 2  # K and V, fp16, every layer
    assert plan.kv_cache_bytes(shape, 2048, 4) == 4 * plan.kv_cache_bytes(shape, 2048, 1)


def test_which_consumer_gpus_fit_the_family():
    fits = {}
    for name, config in plan.LLAMA1.items():
        estimate = plan.make_plan(name, config, bits=4, group_size=128, context=2048)
        fits[name] = [gpu for gpu, memory in plan.CONSUMER_GPUS.items() if estimate.serve_total <= memory]
    assert fits == {"7B": ["12 GB", "16 GB", "24 GB"], "13B": ["12 GB", "16 GB", "24 GB"], "30B": ["24 GB"], "65B": []}


def test_grouped_query_attention_shrinks_kv_cache_and_hessians_follow_in_features():
    config = {**plan.LLAMA1["7B"], "num_key_value_heads": 8}
    gqa, mha = plan.Shape.from_config(config), plan.Shape.from_config(plan.LLAMA1["7B"])
    assert plan.kv_cache_bytes(gqa, 2048) * 4 == plan.kv_cache_bytes(mha, 2048)
    peak = plan.quantize_peak(mha, 128, 2048, true_sequential=True)
    assert peak["hessians"] == 11008**2 * 4  # down_proj alone is the largest true-sequential step
    assert (
        plan.quantize_peak(mha, 128, 2048, true_sequential=False)["hessians"] == (5 * 4096**2 + 4096**2 + 11008**2) * 4
    )


def test_missing_config_and_bad_names_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="7B, 13B|'7B'"):
        plan.read_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    name, config = plan.read_config(str(tmp_path))
    with pytest.raises(ValueError, match="lacks num_hidden_layers"):
        plan.make_plan(name, config)


# ------------------------------------------------------------------------------------------------------ vs measured

MEASURE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path[:0] = [sys.argv[2], str(Path(sys.argv[2]).parents[1])]  # tests/unit/stages and tests (for tiny.py)
    import test_quantize as tq
    import torch
    from tulu_quant.config import QuantizeConfig
    from tulu_quant.progress import rss_bytes

    root = Path(sys.argv[1])
    tq.WIDTHS.update(hidden_size=512, intermediate_size=1024, num_attention_heads=4, num_key_value_heads=4)
    model = tq.build_tiny(root / "model")
    cfg = QuantizeConfig(group_size=32, offload_to_disk=False, device="cpu", compute_dtype="float32")
    warm = tq.write_calibration(model, root / "warm", n=4, length=32)
    tq.quantize_run(model, warm, root / "warm-gptq", cfg, log_file=root / "log")  # imports, kernels, thread pools
    calib = tq.write_calibration(model, root / "calib", n=128, length=256)
    before = rss_bytes()
    result = tq.quantize_run(model, calib, root / "gptq", cfg, log_file=root / "log")
    print(json.dumps({"growth": result.peak_rss - before}))
""")


@pytest.mark.slow
def test_quantize_estimate_against_a_measured_cpu_run(tmp_path):
    """A 2-layer model (hidden 512, intermediate 1024) quantized on CPU in float32 with 128 x 256 calibration tokens,
    in a fresh process after a warm-up run (imports, kernels and thread pools are not the estimate's business). The
    estimate (340 MiB: 284 MiB of tensors, of which 128 MiB layer inputs and outputs, and 20 % allocator slack) must
    cover the measured peak RSS growth and exceed it by at most 2x: an estimate for deciding what fits may err high,
    not low, and the measurement itself spread over 188-297 MiB in ten runs on three 2-core machines."""
    stages = Path(__file__).resolve().parent / "stages"
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path), str(stages)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    growth = json.loads(done.stdout.strip().splitlines()[-1])["growth"]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    estimate = sum(plan.quantize_peak(plan.Shape.from_config(config), 128, 256, compute_bytes=4).values())
    assert growth <= estimate <= 2.0 * growth, (growth / 2**20, estimate / 2**20)


def test_full_suite_projection_scales_with_the_gpu_and_splits_what_does_not_fit():
    from tulu_quant.plan import LLAMA1, PROJECTION_GPUS, Gpu, Shape, project_suite_seconds, suite_table

    shape = Shape.from_config(LLAMA1["13B"])
    fp16, int4 = shape.params * 2, shape.params // 2
    a100 = next(g for g in PROJECTION_GPUS if g.name.startswith("A100"))
    slow = Gpu("half the bandwidth and FLOPS", a100.memory, a100.bandwidth / 2, a100.tflops / 2)
    seconds, n = project_suite_seconds(shape, int4, a100)
    assert n == 1 and 0 < seconds
    assert project_suite_seconds(shape, int4, slow)[0] > 1.5 * seconds  # mostly bound by what halved
    small = Gpu("24 GB", 24 * 2**30, a100.bandwidth, a100.tflops)
    assert project_suite_seconds(shape, fp16, small)[1] >= 2  # 26 GB of weights: tensor parallel
    work = (("decode only", 100, 100, 100),)
    assert project_suite_seconds(shape, int4, a100, work)[0] < project_suite_seconds(shape, int4, a100)[0]
    table = suite_table(shape, 4, 128)
    assert table.count("\n") == len(PROJECTION_GPUS) + 1 and "tensor parallel" in table


def test_stage_projection_follows_the_work_of_each_stage():
    from tulu_quant.config import load_config
    from tulu_quant.plan import LLAMA1, PROJECTION_GPUS, Shape, gpu_rates, stage_projection

    cfg = load_config(CONFIG_13B)
    full = Shape.from_config(LLAMA1["13B"])
    two = Shape.from_config({**LLAMA1["13B"], "num_hidden_layers": 2})
    cpu, small = stage_projection(full, cfg), stage_projection(two, cfg)
    assert list(cpu) == cfg.stages
    assert cpu["quantize"]["seconds"] > 15 * small["quantize"]["seconds"]  # per-layer work dominates
    assert cpu["calibrate"] == small["calibrate"]  # tokenizing does not depend on the model
    fewer = load_config(CONFIG_13B, {"quantize.autoround_iters": 20})
    assert stage_projection(full, fewer)["quantize"]["seconds"] < cpu["quantize"]["seconds"] / 5
    h100 = stage_projection(full, cfg, gpu_rates(next(g for g in PROJECTION_GPUS if g.name.startswith("H100"))))
    assert h100["quantize"]["seconds"] < cpu["quantize"]["seconds"] / 100  # compute moves to the GPU
    assert h100["recover"]["seconds"] > 0.5 * cpu["recover"]["seconds"]  # disk-bound: stays on the host
    assert cpu["quantize"]["rss_bytes"] > 24 * 2**30  # the whole float32 model is in host memory


def test_validate_projection_counts_the_workers_auto_starts():
    """A 13B does not fit twice in 24 GiB: one worker, as serial. Two layers of it do: two workers, faster (decoding
    shared, scoring at the measured gain) and holding a model each. On a GPU: one."""
    from tulu_quant.config import load_config
    from tulu_quant.plan import LLAMA1, PROJECTION_GPUS, Shape, gpu_rates, stage_projection

    two = Shape.from_config({**LLAMA1["13B"], "num_hidden_layers": 2})
    full = Shape.from_config(LLAMA1["13B"])
    auto, serial = load_config(CONFIG_13B), load_config(CONFIG_13B, {"validate.workers": 1})
    assert stage_projection(full, auto)["validate"] == stage_projection(full, serial)["validate"]
    assert stage_projection(full, auto)["validate"]["workers"] == 1
    parallel, alone = stage_projection(two, auto)["validate"], stage_projection(two, serial)["validate"]
    assert parallel["workers"] == 2 and alone["workers"] == 1
    assert 0.5 * alone["seconds"] < parallel["seconds"] < 0.85 * alone["seconds"]
    assert parallel["rss_bytes"] > 1.9 * alone["rss_bytes"]
    h100 = gpu_rates(next(g for g in PROJECTION_GPUS if g.name.startswith("H100")))
    assert stage_projection(two, auto, h100)["validate"]["workers"] == 1
