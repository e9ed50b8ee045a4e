"""ONNX exports of the real stand-in (SmolLM2-135M-Instruct in fp16): fp32 equal to torch on the wiki evaluation text,
int4 from fp16 (k-quant) and from a small GPTQ checkpoint close to fp16, both running with onnxruntime-genai."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import run_config

from tulu_quant.backends.onnx_backend import OnnxBackend
from tulu_quant.chat import prompt_ids
from tulu_quant.config import ExportOnnxConfig, GenerationSettings
from tulu_quant.stages import export_onnx

pytestmark = pytest.mark.slow


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


def test_int4_export_from_a_gptq_checkpoint(standin, standin_gptq, tmp_path):
    result = export(standin, tmp_path / "onnx", gptq=standin_gptq.out, precision="int4", lm_head="int8")
    v = result.verification
    # GPTQ's groups of 64 kept; the builder quantized only the lm_head (int8, its own blocks of 32)
    assert result.source == "gptq" and result.graph["quantized"] == {
        "bits": [4, 8],
        "block_size": [32, 64],
        "accuracy_level": [4],
    }
    assert v["top1_agreement"] > 70 and v["kl_mean"] < 0.3 and 0 < v["generated_tokens"] <= 16  # it may end early
