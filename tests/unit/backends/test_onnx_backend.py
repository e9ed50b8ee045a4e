"""OnnxBackend and `tulu-quant generate` on a tiny random LLaMA exported to fp32 ONNX: the same logits, token ids and
greedy tokens as the torch backend; streaming, stop ids, seeds and the context bound; the text stream's stop strings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny import bpe_tokenizer, run_config, save_tiny_hf

from tulu_quant.backends import detect_kind, load_backend
from tulu_quant.backends.onnx_backend import OnnxBackend, genai_tokenizer_agrees, search_options
from tulu_quant.backends.torch_backend import TorchBackend
from tulu_quant.config import GenerationSettings

TEXT = "The quick brown fox jumps over the lazy dog while the old river runs south past the mill and the market."


def build_tiny(root: Path) -> Path:
    """A random 2-layer LLaMA in float16 with a BOS-prefixing byte-level BPE tokenizer trained on the spot."""
    return save_tiny_hf(root, bpe_tokenizer(TEXT), initializer_range=0.1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> Path:
    from tulu_quant.stages import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "fp32"
    cfg = run_config(export_onnx={"precision": "fp32", "verify": False}, model__chat_format="tulu")
    export_onnx.run(cfg, tiny, out, log_file=out.parent / "export.log")
    return out


@pytest.fixture(scope="module")
def onnx(exported) -> OnnxBackend:
    return OnnxBackend(exported, threads=2)


@pytest.fixture(scope="module")
def reference(tiny) -> TorchBackend:
    return TorchBackend(tiny, device="cpu", dtype="float32")


def test_logits_equal_the_torch_backend(onnx, reference, exported):
    assert detect_kind(exported) == "onnx" and onnx.context_length == 64 == reference.context_length
    ids = onnx.tokenizer(TEXT).input_ids
    assert ids == reference.tokenizer(TEXT).input_ids and ids[0] == 0  # same tokenizer files: same ids, BOS included
    logits = onnx.logits(ids)
    assert logits.dtype == np.float32 and logits.shape == (len(ids), len(onnx.tokenizer))
    np.testing.assert_allclose(logits, reference.logits(ids), rtol=1e-4, atol=1e-5)
    assert genai_tokenizer_agrees(onnx, TEXT)
    with pytest.raises(ValueError, match="exceed the model's context of 64"):
        onnx.logits([5] * 65)


def test_greedy_generation_matches_torch_streams_and_stops(onnx, reference):
    ids = onnx.tokenizer("The lazy dog").input_ids
    streamed = []
    settings = GenerationSettings(max_new_tokens=12)
    new = onnx.generate(ids, settings, on_token=streamed.append)
    assert new == streamed == reference.generate(ids, settings) and len(new) == 12
    assert onnx.generate(ids, settings, on_token=lambda t: True) == new[:1]  # True from on_token stops after it
    assert onnx.generate(ids, settings, stop_ids=(new[3],)) == new[: new.index(new[3])]  # a stop id is not returned
    penalized = GenerationSettings(max_new_tokens=12, repetition_penalty=1.5)
    assert onnx.generate(ids, penalized) == reference.generate(ids, penalized)  # the same CTRL penalty as transformers
    assert len(onnx.generate(ids, GenerationSettings(max_new_tokens=500))) == 64 - len(ids)  # the context bounds it
    assert onnx.generate([5] * 64, settings) == []


def test_sampling_follows_the_seed(onnx):
    ids = onnx.tokenizer("The lazy dog").input_ids
    sampled = [onnx.generate(ids, GenerationSettings(max_new_tokens=16, temperature=1.5, seed=s)) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]
    assert sampled[0] != onnx.generate(ids, GenerationSettings(max_new_tokens=16))
    options = search_options(GenerationSettings(temperature=0.7, top_p=0.9, seed=3, repetition_penalty=1.1), 10, 20)
    assert options == {
        "max_length": 30,
        "do_sample": True,
        "repetition_penalty": 1.1,
        "top_k": 0,
        "temperature": 0.7,
        "top_p": 0.9,
        "random_seed": 3,
    }


def test_load_backend_threads_device_and_description(exported, onnx):
    single = load_backend(exported, threads=1, device="cpu")
    ids = onnx.tokenizer(TEXT).input_ids
    np.testing.assert_allclose(single.logits(ids), onnx.logits(ids), rtol=1e-5, atol=1e-6)
    info = single.describe()
    assert info["kind"] == "onnx" and info["precision"] == "fp32" and info["target"] == "cpu" and info["threads"] == 1
    assert info["size_bytes"] == sum((exported / f).stat().st_size for f in ("model.onnx", "model.onnx.data"))
    with pytest.raises(ValueError, match="device 'tpu'"):
        OnnxBackend(exported, device="tpu")
    with pytest.raises(FileNotFoundError, match="no genai_config.json"):
        OnnxBackend(exported.parent)


def test_search_options_do_not_apply_the_builders_top_k(exported):
    # the builder writes top_k 50 into genai_config.json; the other backends sample from the whole distribution
    assert json.loads((exported / "genai_config.json").read_text())["search"]["top_k"] == 50
    assert search_options(GenerationSettings(temperature=1.0), 1, 1)["top_k"] == 0


def test_batches_of_one_length_share_a_generator_and_end_row_by_row(onnx, reference):
    from tulu_quant.backends.onnx_backend import same_length_groups

    assert same_length_groups([[1, 2], [3], [4, 5], [2, 9]], pad_id=9) == [[0, 2], [1], [3]]
    texts = ("The lazy dog", "The old river", "The quick", "the market.")
    prompts = [onnx.tokenizer(t).input_ids for t in texts]
    assert max(map(len, same_length_groups(prompts, onnx._pad_id))) > 1  # a real batch among them
    settings = GenerationSettings(max_new_tokens=10)
    alone = [onnx.generate(ids, settings) for ids in prompts]
    assert onnx.generate_batch(prompts, settings) == alone == [reference.generate(ids, settings) for ids in prompts]
    stop = (alone[1][2],)
    streamed: list[list[int]] = [[] for _ in prompts]
    ends = onnx.generate_batch(prompts, settings, [s.append for s in streamed], stop)
    assert ends == streamed == [onnx.generate(ids, settings, stop_ids=stop) for ids in prompts]
    logits = onnx.logits_batch(prompts)
    last = onnx.logits_batch(prompts, last_only=True)
    for row, ids in enumerate(prompts):
        np.testing.assert_allclose(logits[row], onnx.logits(ids), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(last[row], onnx.logits(ids)[-1], rtol=1e-5, atol=1e-5)
