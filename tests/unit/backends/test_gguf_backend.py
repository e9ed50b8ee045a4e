"""GgufBackend on a tiny random LLaMA exported by export-gguf: every position's logits (F16 equal to torch within f16
rounding), greedy generation that matches torch and streams, stop ids, seeds, the context bound, files and folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny import SENTENCES, export_tiny_gguf, save_tiny_sentencepiece

from tulu_quant.backends import artifact_paths, detect_kind, load_backend, model_folder
from tulu_quant.backends.gguf_backend import GgufBackend, gguf_files, sampler_options
from tulu_quant.backends.torch_backend import TorchBackend
from tulu_quant.config import GenerationSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_sentencepiece(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory) -> Path:
    return export_tiny_gguf(tiny, tmp_path_factory.mktemp("gguf") / "gguf", types=("F16", "Q8_0")).out


@pytest.fixture(scope="module")
def f16(folder) -> GgufBackend:
    backend = GgufBackend(folder / "tiny-F16.gguf", threads=2)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(tiny) -> TorchBackend:
    return TorchBackend(tiny, device="cpu", dtype="float32")


def ids_of(backend, text: str = SENTENCES * 2) -> list[int]:
    return backend.tokenizer(text).input_ids[:48]


def test_every_positions_logits_equal_torch_within_f16_rounding(f16, reference):
    ids = ids_of(reference)
    ours, theirs = f16.logits(ids), reference.logits(ids)
    assert ours.shape == theirs.shape == (len(ids), len(reference.tokenizer)) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 2e-2
    batch = f16.logits_batch([ids[:10], ids], last_only=True)
    np.testing.assert_array_equal(batch[1], ours[-1])  # the same pass per sequence, whatever else is in the batch
    np.testing.assert_allclose(f16.logits_batch([ids[:10]])[0], f16.logits(ids[:10]))
    with pytest.raises(ValueError, match="exceed the model's context"):
        f16.logits(ids * 10)


def test_greedy_generation_matches_torch_streams_and_stops(f16, reference):
    prompt = ids_of(reference)[:12]
    settings = GenerationSettings(max_new_tokens=10)
    greedy = f16.generate(prompt, settings)
    assert greedy == reference.generate(prompt, settings)[: len(greedy)] and len(greedy) == 10
    streamed = []
    assert f16.generate(prompt, settings, on_token=lambda t: streamed.append(t)) == greedy == streamed
    assert f16.generate(prompt, settings, on_token=lambda t: t == greedy[3]) == greedy[:4]  # True ends after it
    assert f16.generate(prompt, settings, stop_ids=(greedy[2],)) == greedy[:2]  # a stop id is not returned
    rows = f16.generate_batch([prompt, prompt[:6]], settings)
    assert rows == [greedy, f16.generate(prompt[:6], settings)]


def test_sampling_follows_the_seed(f16, reference):
    prompt = ids_of(reference)[:8]
    settings = GenerationSettings(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=7)
    assert f16.generate(prompt, settings) == f16.generate(prompt, settings)
    others = {tuple(f16.generate(prompt, settings.model_copy(update={"seed": s}))) for s in range(4)}
    assert len(others) > 1
    assert sampler_options(GenerationSettings())["temp"] == 0.0 and sampler_options(settings)["top_k"] == 0


def test_files_and_folders(folder, f16):
    q8 = folder / "tiny-Q8_0.gguf"
    assert detect_kind(q8) == detect_kind(folder) == "gguf" and model_folder(q8) == folder
    assert gguf_files(folder) == artifact_paths(folder) == [folder / "tiny-F16.gguf", q8]  # the configured order
    backend = load_backend(folder, threads=2)  # a folder: its first file
    assert backend.path == folder / "tiny-F16.gguf" and backend.describe()["type"] == "F16"
    described = load_backend(q8).describe()
    assert {k: described[k] for k in ("kind", "type", "device")} == {"kind": "gguf", "type": "Q8_0", "device": "cpu"}
    assert f16.context_length == 256 and f16.size_bytes() == (folder / "tiny-F16.gguf").stat().st_size


def test_a_gguf_without_tokenizer_files_uses_the_one_inside(folder, f16, tmp_path):
    shutil.copy(folder / "tiny-Q8_0.gguf", tmp_path / "alone.gguf")
    alone = GgufBackend(tmp_path / "alone.gguf", threads=2)
    try:
        text = "the old river runs south past the mill"
        assert (
            alone.tokenizer(text, add_special_tokens=False).input_ids
            == f16.tokenizer(text, add_special_tokens=False).input_ids
        )
    finally:
        alone.close()


def test_generate_command_streams_from_a_gguf_file(folder, capfd):
    from tulu_quant.cli import main

    code = main(["generate", "--model", str(folder / "tiny-Q8_0.gguf"), "--prompt", "the river"]
                + ["--max-new-tokens", "6", "--threads", "2", "--chat-format", "tulu"])  # fmt: skip
    out = capfd.readouterr()
    assert code == 0 and out.out.endswith("\n") and "time to first token" in out.err
