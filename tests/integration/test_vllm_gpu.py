"""vLLM serves our GPTQ output (CUDA and vLLM only; `make test-gpu`)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (pip install vllm)")
def test_vllm_generates_from_our_gptq_checkpoint(tmp_path):
    from vllm import LLM, SamplingParams

    from tulu_quant.config import CalibrateConfig, QuantizeConfig, StandinConfig
    from tulu_quant.stages import calibrate, quantize
    from tulu_quant.stages.standin import converted_model

    model_dir, _ = converted_model(StandinConfig())  # SmolLM2-135M: vLLM needs real widths, not a toy model
    calib = calibrate.run(model_dir, tmp_path / "calib", CalibrateConfig(num_samples=16, seq_len=256), "tokenizer")
    gptq = quantize.run(
        model_dir, calib.out, tmp_path / "gptq", QuantizeConfig(group_size=64, device="cuda"), "tokenizer"
    )
    llm = LLM(model=str(gptq.out), quantization="gptq", dtype="float16", gpu_memory_utilization=0.3, max_model_len=512)
    out = llm.chat(
        [{"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=16, temperature=0)
    )
    assert "Paris" in out[0].outputs[0].text
