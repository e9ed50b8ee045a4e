"""calibrate + quantize on the stand-in (SmolLM2-135M, LLaMA architecture) with reduced settings, end to end on CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tulu_quant.stages import quantize

pytestmark = pytest.mark.slow


@pytest.fixture
def gptq(standin_gptq):
    return standin_gptq


def test_published_variant_with_group_128_is_refused_for_the_standin(standin, tmp_path, capfd):
    from tulu_quant.cli import main

    code = main(
        [
            "--log-file",
            str(tmp_path / "log"),
            "quantize",
            "--model",
            str(standin),
            "--out",
            str(tmp_path / "q"),
            "--variant",
            "gptq-4bit-128g",
        ]
    )
    assert code == 2
    err = capfd.readouterr().err
    assert "variant 'gptq-4bit-128g': group_size 128 does not divide the input width 576" in err
    assert not (tmp_path / "q").exists() and not (tmp_path / "q.calib").exists()


def test_checkpoint_reloads_scores_near_fp16_and_chats(standin, gptq):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.bench_quant import dequantized_model, float32_model, perplexity
    from tulu_quant.data import get_source
    from tulu_quant.eval.perplexity import make_windows, tokenize_documents

    assert gptq.compression > 1.8  # tied 49152 x 576 embeddings stay fp16: the linears alone shrink ~3.6x
    tokenizer = AutoTokenizer.from_pretrained(gptq.out)
    ids = tokenize_documents(tokenizer, get_source("wiki").documents("evaluation")[:8])
    windows = make_windows(ids, 256, None, 4).inputs
    reference = perplexity(float32_model(standin), windows)
    quantized = perplexity(dequantized_model(standin, gptq.out, 4), windows)
    # 4-bit g64 costs the stand-in 10-30 % of perplexity (docs/quantization.md); a broken checkpoint costs 100x
    assert reference < quantized < 1.5 * reference, (reference, quantized)
    model = AutoModelForCausalLM.from_pretrained(gptq.out).eval()
    with torch.no_grad():
        logits = model(torch.tensor([windows[0]])).logits[0].float()
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(windows[0][1:]))
    assert math.exp(float(nll)) < 2 * quantized  # the transformers kernel path agrees with the dequantized weights
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply, reply
    record = json.loads((gptq.out / quantize.RECORD_FILE).read_text())
    assert record["calibration"]["counts"] == {"wiki:calibration": 16}
