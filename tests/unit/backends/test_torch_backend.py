"""TorchBackend on a tiny random LLaMA: logits equal the model's forward pass, generation streams, stops and seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import bpe_tokenizer, save_tiny_hf

from tulu_quant.backends import load_backend, pad_batch, torch_backend
from tulu_quant.backends.torch_backend import TorchBackend, middle_padded, shared_prefix
from tulu_quant.config import GenerationSettings


def build_tiny(root: Path, seed: int = 0, dtype=torch.float16) -> Path:
    """A random 2-layer LLaMA saved in `dtype`, with a byte-level BPE tokenizer trained on the spot."""
    return save_tiny_hf(root, bpe_tokenizer("The quick brown fox jumps over the lazy dog."), seed=seed, dtype=dtype)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def backend(tiny) -> TorchBackend:
    return TorchBackend(tiny)


def reference_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_fp16_checkpoint_is_computed_in_float32_on_cpu(backend, tiny):
    assert json.loads((tiny / "config.json").read_text())["dtype"] == "float16"
    assert backend.dtype == "float32" and backend.device == "cpu" and backend.context_length == 64
    ids = backend.tokenizer("The quick brown fox").input_ids
    logits = backend.logits(ids)
    assert logits.dtype == np.float32 and logits.shape == (len(ids), len(backend.tokenizer))
    with torch.no_grad():
        expected = reference_model(tiny)(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exceed the model's context of 64"):
        backend.logits([5] * 65)
    info = backend.describe()
    assert info["kind"] == "torch" and info["size_bytes"] == backend.size_bytes() > 0 and info["quantization"] is None


def test_greedy_generation_matches_transformers_and_streams(backend, tiny):
    ids = backend.tokenizer("The lazy dog").input_ids
    streamed = []
    new = backend.generate(ids, GenerationSettings(max_new_tokens=12), on_token=lambda t: streamed.append(t))
    with torch.no_grad():
        expected = (
            reference_model(tiny)
            .generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=2)[
                0, len(ids) :
            ]
            .tolist()
        )
    assert new == expected == streamed and len(new) == 12
    # returning True from on_token stops after that token; a stop id ends generation without being returned
    assert backend.generate(ids, GenerationSettings(max_new_tokens=12), on_token=lambda t: len(streamed) > 0) == new[:1]
    assert backend.generate(ids, GenerationSettings(max_new_tokens=12), stop_ids=(new[3],)) == new[:3]
    # the context bounds the answer
    assert len(backend.generate([5] * 60, GenerationSettings(max_new_tokens=12))) == 4


def test_sampling_is_reproducible_by_seed(backend):
    ids = backend.tokenizer("The quick").input_ids
    settings = GenerationSettings(max_new_tokens=20, temperature=1.5, top_p=0.95, seed=7)
    first = backend.generate(ids, settings)
    assert backend.generate(ids, settings) == first
    assert (
        backend.generate(
            ids, GenerationSettings(max_new_tokens=20, temperature=1.5, top_p=0.95, repetition_penalty=1.0, seed=8)
        )
        != first
    )


def test_a_tiny_top_p_samples_the_greedy_answer(backend):
    ids = backend.tokenizer("The lazy").input_ids
    greedy = backend.generate(ids, GenerationSettings(max_new_tokens=10))
    assert backend.generate(ids, GenerationSettings(max_new_tokens=10, temperature=5.0, top_p=1e-6, seed=3)) == greedy


def test_batched_logits_equal_one_sequence_at_a_time(backend):
    seqs = [backend.tokenizer(t).input_ids for t in ("The quick brown fox jumps", "The", "lazy dog. The quick")]
    batched = backend.logits_batch(seqs)
    last = backend.logits_batch(seqs, last_only=True)
    assert last.shape == (3, len(backend.tokenizer))
    for row, ids in enumerate(seqs):
        alone = backend.logits(ids)
        assert batched[row].shape == alone.shape
        np.testing.assert_allclose(batched[row], alone, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(last[row], alone[-1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="exceed the model's context of 64"):
        backend.logits_batch([[5] * 3, [5] * 65])


def test_batched_greedy_generation_ends_each_row_as_alone(backend):
    prompts = [backend.tokenizer(t).input_ids for t in ("The lazy dog", "The", "quick brown fox jumps over")]
    prompts.append([5] * 58)  # room for 6 tokens only
    settings = GenerationSettings(max_new_tokens=12)
    alone = [backend.generate(ids, settings) for ids in prompts]
    assert [len(a) for a in alone] == [12, 12, 12, 6]
    assert backend.generate_batch(prompts, settings) == alone
    # per-row stop ids and on_token ends, and streaming, row by row: each row ends as generate() ends it alone
    stop = (alone[0][4],)

    def third(row: int, seen: list[int]):
        return lambda token: seen.append(token) or (row == 2 and len(seen) == 3)

    streamed: list[list[int]] = [[] for _ in prompts]
    ends = backend.generate_batch(prompts, settings, [third(r, streamed[r]) for r in range(len(prompts))], stop)
    expected = [backend.generate(ids, settings, third(r, []), stop) for r, ids in enumerate(prompts)]
    assert ends == expected == streamed
    assert len(ends[0]) == 4 and len(ends[2]) <= 3


def test_shared_prefix_leaves_each_prompt_a_token_and_pads_after_it():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9, 9], [1, 2, 7]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter prompt keeps its last token
    assert shared_prefix([[1, 2, 3]]) == 0 and shared_prefix([[4, 2], [1, 2]]) == 0
    ids, mask = middle_padded([[1, 2, 3], [1, 2, 5, 6, 7]], 2, 0)
    assert ids == [[1, 2, 0, 0, 3], [1, 2, 5, 6, 7]]
    assert mask == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    assert middle_padded([[1, 2, 3], [4]], 0, 0) == pad_batch([[1, 2, 3], [4]], 0, left=True)  # no prefix: left


def test_a_shared_prefix_computed_once_changes_no_answer(backend, monkeypatch):
    """Few-shot prompts (one long prefix, different questions) and one prompt sampled n times decode as they do
    without the shared prefix cache, greedy and seeded sampling alike, and the prefix is computed once per batch."""
    shots = backend.tokenizer("The quick brown fox jumps over the lazy dog. " * 4).input_ids
    prompts = [shots + backend.tokenizer(q).input_ids for q in ("The lazy", "quick brown fox", "dog")]
    prompts.append(list(prompts[0]))
    assert shared_prefix(prompts) >= torch_backend.SHARED_PREFIX_MIN
    greedy = GenerationSettings(max_new_tokens=10)
    sampled = GenerationSettings(max_new_tokens=10, temperature=0.8, top_p=0.95, seed=3)
    calls = []
    original = TorchBackend._prefix_cache
    monkeypatch.setattr(TorchBackend, "_prefix_cache", lambda self, *a: calls.append(a) or original(self, *a))
    with_prefix = [backend.generate_batch(prompts, s) for s in (greedy, sampled)]
    assert len(calls) == 2 and calls[0][1] == len(prompts)
    monkeypatch.setattr(torch_backend, "SHARED_PREFIX_MIN", 10**9)
    assert [backend.generate_batch(prompts, s) for s in (greedy, sampled)] == with_prefix
    assert with_prefix[0] == [backend.generate(ids, greedy) for ids in prompts]
    assert len(calls) == 2


def test_load_backend_picks_torch_for_plain_weights(tiny):
    assert load_backend(tiny).kind == "torch"
    with pytest.raises(ValueError, match="TorchBackend handles"):
        TorchBackend(tiny, kind="onnx")


@pytest.fixture(scope="module")
def tiny_gptq(tiny, tmp_path_factory) -> Path:
    """The tiny model quantized by GPTQModel (4-bit, group 32) into a GPTQ checkpoint (a few seconds on CPU)."""
    out = tmp_path_factory.mktemp("gptq") / "q4"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTQMODEL_CPU_WORKERS", "2")  # GPTQModel needs it on 1-2 core machines
        from gptqmodel import GPTQModel, QuantizeConfig
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tiny)
        calibration = [tokenizer("The quick brown fox jumps over the lazy dog. " * 3) for _ in range(8)]
        model = GPTQModel.load(str(tiny), QuantizeConfig(bits=4, group_size=32, sym=True, desc_act=False), device="cpu")
        model.quantize(
            [{"input_ids": c["input_ids"], "attention_mask": c["attention_mask"]} for c in calibration], batch_size=1
        )
        model.save(str(out))
    return out


def test_gptq_checkpoint_scores_and_generates(tiny, tiny_gptq):
    quantized = load_backend(tiny_gptq)
    assert quantized.kind == "gptq" and quantized.describe()["quantization"]["bits"] == 4
    assert quantized.size_bytes() < TorchBackend(tiny).size_bytes()
    ids = quantized.tokenizer("The quick brown fox jumps over the lazy dog").input_ids
    q_logits, fp_logits = quantized.logits(ids), TorchBackend(tiny).logits(ids)
    assert q_logits.shape == fp_logits.shape and np.isfinite(q_logits).all()
    # 4-bit weights move the logits a little, not arbitrarily: strongly correlated with the fp model's
    assert np.corrcoef(q_logits.ravel(), fp_logits.ravel())[0, 1] > 0.9
    assert not np.allclose(q_logits, fp_logits)
    streamed = []
    assert (
        len(quantized.generate(ids, GenerationSettings(max_new_tokens=5), on_token=streamed.append))
        == 5
        == len(streamed)
    )


def test_a_row_ends_after_the_models_eos_which_is_kept_unless_a_stop_id(backend, monkeypatch):
    ids = backend.tokenizer("The lazy dog").input_ids
    settings = GenerationSettings(max_new_tokens=12)
    free = backend.generate(ids, settings)
    monkeypatch.setattr(backend, "eos_ids", (free[2],))
    first = free.index(free[2])
    assert backend.generate_batch([ids, ids[:2]], settings)[0] == free[: first + 1]
    assert backend.generate(ids, settings, stop_ids=(free[2],)) == free[:first]
