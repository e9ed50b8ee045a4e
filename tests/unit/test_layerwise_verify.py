"""The layer-by-layer verification of `recover --verify` (tulu_quant/layerwise_verify.py)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_llama_config, tiny_state, write_checkpoint

from tulu_quant import layerwise_verify


def test_streaming_forward_matches_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    for tie in (False, True):
        root = write_checkpoint(
            tmp_path / f"m{tie}", tiny_state(tiny_llama_config(tie=tie), torch.float32), tiny_llama_config(tie=tie)
        )
        ids = torch.randint(0, 96, (2, 17))
        model = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32).eval()
        with torch.no_grad():
            expected = model(ids).logits
        assert torch.allclose(layerwise_verify.LayerStream(root).logits(ids), expected, atol=1e-5, rtol=1e-4)


def test_verify_fails_above_the_perplexity_limit(tmp_path, monkeypatch):
    root = write_checkpoint(tmp_path / "m", tiny_state(tiny_llama_config(), torch.float32), tiny_llama_config())

    class CharTokenizer:  # a tokenizer that maps characters into the tiny vocabulary
        eos_token, eos_token_id, bos_token, chat_template = "</s>", 2, None, None

        def __call__(self, text):
            return type("E", (), {"input_ids": [1] + [3 + ord(c) % 90 for c in text]})

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(65 + i % 26) for i in ids)

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: CharTokenizer())
    ok = layerwise_verify.verify_model(root, max_ppl=1e6, new_tokens=3, chat_format="tulu")
    assert math.isfinite(ok["perplexity"]) and len(ok["sample"]) == 3
    with pytest.raises(layerwise_verify.VerifyError, match="perplexity"):
        layerwise_verify.verify_model(root, max_ppl=2.0, new_tokens=1, chat_format="tulu")


def test_perplexity_limit_tightens_with_size():
    limits = [layerwise_verify.perplexity_limit(n) for n in (135e6, 7e9, 13e9)]
    assert limits == sorted(limits, reverse=True) and limits[0] == 100 and limits[-1] == 36


def test_perplexity_of_a_sequence_the_model_is_sure_of_is_one():
    ids = torch.tensor([1, 2, 3, 4])
    logits = torch.full((4, 8), -1e4)
    logits[torch.arange(3), ids[1:]] = 1e4  # each next token certain
    assert layerwise_verify.perplexity_of(logits, ids) == pytest.approx(1.0)
    assert layerwise_verify.perplexity_of(torch.zeros(4, 8), ids) == pytest.approx(8.0)  # uniform over 8


def test_stream_refuses_other_architectures(tmp_path):
    config = tiny_llama_config(model_type="gpt2")
    root = write_checkpoint(tmp_path / "m", tiny_state(tiny_llama_config(), torch.float32), config)
    with pytest.raises(layerwise_verify.VerifyError, match="LLaMA-architecture"):
        layerwise_verify.LayerStream(root)
