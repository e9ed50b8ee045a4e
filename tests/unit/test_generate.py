"""`tulu-quant generate` (tulu_quant/generate.py), and one prompt giving one text through generate, the demo and
validation: they share tulu_quant.chat's format resolution, stop strings and stop ids."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tiny import bpe_tokenizer, run_config, save_tiny_hf
from unit.eval.eval_fakes import FakeBackend

from tulu_quant import generate
from tulu_quant.artifacts import describe_folder
from tulu_quant.chat import install_template
from tulu_quant.config import GenerateConfig, GenerationSettings

TEXT = "The quick brown fox jumps over the lazy dog. Sure! Here you go.\n" * 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A random 2-layer LLaMA whose folder carries our Tulu template, as every folder tulu-quant writes does."""
    root = save_tiny_hf(tmp_path_factory.mktemp("tiny"), bpe_tokenizer(TEXT + "<|user|><|assistant|>"), seed=0)
    install_template(root, "tulu")
    return root


def test_one_prompt_gives_one_text_through_generate_the_demo_and_validate(tiny):
    from transformers import AutoTokenizer

    from tulu_quant.demo.engine import Engine
    from tulu_quant.eval.benchmarks import generate_answers

    answer = "Sure! Here you go.\n<|user|>\nand the model goes on with the next turn"
    backend = FakeBackend(AutoTokenizer.from_pretrained(tiny), answers={"": answer}, context_length=64)
    backend.path = tiny
    message = [{"role": "user", "content": "Hello"}]
    settings = GenerationSettings(max_new_tokens=40)
    by_generate = generate.generate(backend, message, "auto", settings).text
    *_, reply = Engine(backend, describe_folder(tiny)).stream(message, settings)
    by_validate = generate_answers(backend, ["Hello"], "tulu", 40, lambda n=1: None)[0]
    assert by_generate.strip() == reply.text == by_validate == "Sure! Here you go."  # cut before the next turn
    assert backend.prompts[0] == backend.prompts[1] == backend.prompts[2]  # the same prompt ids, BOS and all
    assert backend.tokenizer.decode(backend.prompts[0]) == "<s><|user|>\nHello\n<|assistant|>\n"


def test_generate_runs_a_folder_streams_the_reply_and_times_it(tiny):
    from tulu_quant.backends.torch_backend import TorchBackend

    pieces = []
    cfg = GenerateConfig(max_new_tokens=10, threads=2)
    result = generate.run(tiny, "Hello", cfg, write=pieces.append)
    assert result.chat_format == "tulu" and result.backend["kind"] == "torch"
    assert "".join(pieces) == result.text
    reference = TorchBackend(tiny, device="cpu")
    ids = reference.tokenizer("<|user|>\nHello\n<|assistant|>\n").input_ids
    assert result.prompt_tokens == len(ids)
    assert result.new_ids == reference.generate(ids, GenerationSettings(max_new_tokens=10), stop_ids=(1,))
    timing = result.timing
    assert timing.new_tokens == len(result.new_ids) and 0 < timing.ttft_s <= timing.total_s
    assert len(timing.token_times) == timing.new_tokens and "tokens/s" in result.summary()
    raw = generate.run(tiny, "Hello", cfg.model_copy(update={"chat_format": "none"}))
    assert raw.chat_format == "none" and raw.prompt_tokens == len(reference.tokenizer("Hello").input_ids)


def test_a_system_message_comes_first():
    assert generate.messages_for("hi", "be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert generate.messages_for("hi", None) == [{"role": "user", "content": "hi"}]


def test_timing_from_token_times():
    timing = generate.Timing.from_times([0.5, 0.6, 0.7], 0.8)
    assert timing.decode_tokens_per_s == pytest.approx(10.0) and timing.ttft_s == 0.5 and timing.new_tokens == 3
    assert math.isnan(generate.Timing.from_times([0.5], 0.6).decode_tokens_per_s)  # one token: no decode rate


def test_settings_come_from_the_generate_section():
    cfg = run_config(generate={"temperature": 0.5, "seed": 3, "device": "cpu"}).generate
    assert cfg.settings == GenerationSettings(temperature=0.5, seed=3)
    assert GenerateConfig().settings == GenerationSettings()
