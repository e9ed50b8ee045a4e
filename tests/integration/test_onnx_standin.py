"""ONNX exports of the real stand-in (SmolLM2-135M-Instruct in fp16): fp32 equal to torch on the wiki evaluation text,
int4 from fp16 (k-quant) and from a small GPTQ checkpoint close to fp16, both running with onnxruntime-genai."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny import run_config

from tulu_quant.backends.onnx_backend import OnnxBackend
from tulu_quant.chat import prompt_ids
from tulu_quant.config import ExportOnnxConfig, GenerationSettings, StandinConfig
from tulu_quant.stages import export_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def standin() -> Path:
    from tulu_quant.stages.standin import converted_model

    model_dir, _ = converted_model(StandinConfig())
    return model_dir


def export(model: Path, out: Path, gptq: Path | None = None, **values) -> export_onnx.ExportResult:
    cfg = ExportOnnxConfig.model_validate({"threads": 2, "verify_tokens": 256, **values})
    run_cfg = run_config(export_onnx=cfg, model__chat_format="tokenizer")
    return export_onnx.run(run_cfg, model, out, gptq_dir=gptq, log_file=out.parent / "export.log")


def test_fp32_export_equals_torch_on_the_wiki_evaluation_text(standin, tmp_path):
    result = export(standin, tmp_path / "fp32", precision="fp32")
    v = result.verification
    assert v["tokens"] == 256 and v["max_rel_diff"] < 1e-4 and v["top1_agreement"] == 100.0
    assert v["ppl_export"] == pytest.approx(v["ppl_reference"], rel=1e-4) and v["ppl_reference"] < 60
    assert v["greedy_prefix_matching_torch"] >= 8 and v["genai_tokenizer_agrees"]
    assert result.onnx_bytes > 135e6 * 4 * 0.9  # 135 M parameters in float32


def test_int4_export_from_fp16_is_small_and_close(standin, tmp_path):
    result = export(standin, tmp_path / "int4", precision="int4", from_gptq=False)
    v = result.verification
    assert v["top1_agreement"] > 70 and v["kl_mean"] < 0.3 and v["ppl_export"] < 1.5 * v["ppl_reference"]
    assert result.onnx_bytes < 135e6  # under one byte per parameter
    backend = OnnxBackend(result.out, threads=2)
    prompt = prompt_ids(backend.tokenizer, [{"role": "user", "content": "What is the capital of France?"}], "tokenizer")
    assert "Paris" in backend.tokenizer.decode(backend.generate(prompt, GenerationSettings(max_new_tokens=24)))


def test_int4_export_from_a_gptq_checkpoint(standin, tmp_path):
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    from tulu_quant.data import get_source

    tokenizer = AutoTokenizer.from_pretrained(standin)
    text = "\n\n".join(get_source("wiki").documents("calibration")[:4])
    ids = tokenizer(text).input_ids
    calibration = [{"input_ids": ids[i : i + 256], "attention_mask": [1] * 256} for i in range(0, 16 * 256, 256)]
    model = GPTQModel.load(
        str(standin), QuantizeConfig(bits=4, group_size=64, sym=False), device="cpu", dtype=torch.float16
    )
    model.quantize(calibration, batch_size=1)
    model.save(str(tmp_path / "gptq"))
    del model
    result = export(standin, tmp_path / "onnx", gptq=tmp_path / "gptq", precision="int4", lm_head="int8")
    v = result.verification
    # GPTQ's groups of 64 kept; the builder quantized only the lm_head (int8, its own blocks of 32)
    assert result.source == "gptq" and result.graph["quantized"] == {
        "bits": [4, 8],
        "block_size": [32, 64],
        "accuracy_level": [4],
    }
    assert v["top1_agreement"] > 70 and v["kl_mean"] < 0.3 and v["generated_tokens"] == 16
