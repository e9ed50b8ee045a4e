"""Every benchmark kind gives the same results in batches as one sequence at a time (greedy decoding), on a tiny
random LLaMA through the transformers backend and through llama.cpp (its F16 GGUF): perplexity, KL against a saved
reference, MMLU, GSM, BBH, TydiQA, Codex and AlpacaFarm answers, at batch sizes 1, 3 and auto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import bpe_tokenizer, export_tiny_gguf, save_tiny_hf, save_tiny_sentencepiece

from tulu_quant.backends.torch_backend import TorchBackend
from tulu_quant.config import GenerationSettings
from tulu_quant.eval import benchmarks, decode, perplexity
from tulu_quant.eval.sandbox import Limits

NOOP = lambda n=1, **_: None  # noqa: E731
TEXT = (
    "Question: what is 2 + 3? Answer: 5\n\nQ: is the sky blue?\nA: Let's think. So the answer is yes.\n\n"
    "Passage: the river runs south. The answer is: A B C D\ndef add(a, b):\n    return a + b\n"
)


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> TorchBackend:
    root = tmp_path_factory.mktemp("tiny")
    # a sharper output distribution than the default (head_scale): argmax ties are out of reach of float rounding
    save_tiny_hf(root, bpe_tokenizer(TEXT), seed=3, head_scale=4.0, max_position_embeddings=512, dtype=torch.float32)
    return TorchBackend(root)


@pytest.fixture(scope="module")
def gguf_backend(tmp_path_factory):
    from tulu_quant.backends.gguf_backend import GgufBackend

    root = tmp_path_factory.mktemp("tiny-gguf")
    model = save_tiny_sentencepiece(root / "model", seed=3, head_scale=4.0, max_position_embeddings=512)
    export_tiny_gguf(model, root / "gguf", types=("F16",))
    backend = GgufBackend(root / "gguf", threads=2)
    yield backend
    backend.close()


def mmlu_item(q: str, answer: str) -> dict:
    return {"question": q, "choices": ["red", "blue", "river", "sky"], "answer": answer, "subject": "high_school_logic"}


QA = [
    {"lang": "english", "context": "The river runs south.", "question": "Where does it run?", "answers": ["south"]},
    {"lang": "english", "context": "The sky is blue.", "question": "What colour?", "answers": ["blue"]},
    {"lang": "english", "context": "Two and three.", "question": "Sum?", "answers": ["5"]},
]
PROBLEMS = [
    {
        "task_id": f"t/{i}",
        "prompt": f"def add{i}(a, b):\n" + ' """Add."""\n' * i,
        "test": "def check(f):\n    assert f(1, 2) == 3\n",
        "entry_point": f"add{i}",
    }
    for i in range(3)
]


def every_benchmark(backend: TorchBackend, batch_size, folder: Path) -> dict:
    tokens = backend.tokenizer(TEXT * 4, add_special_tokens=False).input_ids
    windows = perplexity.make_windows(tokens, 24, None, max_windows=5)
    reference = folder / "kl"
    perplexity.save_reference(backend, windows, reference, NOOP, batch_size)
    kl = perplexity.compare_to_reference(backend, windows, reference, NOOP, batch_size)
    mmlu = [mmlu_item("Which is wet?", "C"), mmlu_item("What is above?", "D"), mmlu_item("Pick a colour", "B")]
    shots = {"high_school_logic": [mmlu_item("Which is red?", "A")] * 2}
    gsm = [{"question": q, "answer": "#### 5"} for q in ("what is 2 + 3?", "what is 5?", "how many rivers run south?")]
    exemplars = [{"question": "what is 1 + 1?", "cot_answer": "1 + 1 = 2. So the answer is 2.", "short_answer": "2"}]
    bbh = [{"task": "sky", "input": q, "target": "yes"} for q in ("is the sky blue?", "is it?", "does the river run?")]
    task_prompts = {"sky": "Answer.\n\nQ: is the river wet?\nA: Let's think. So the answer is yes."}
    limits = Limits(3.0, 1 << 30)
    greedy = GenerationSettings(max_new_tokens=12, temperature=0.0)
    args = {"advance": NOOP, "batch_size": batch_size}
    return {
        "ppl": perplexity.score_windows(backend, windows, NOOP, batch_size).round(5).tolist(),
        "kl_tokens": kl["tokens"],
        "top1": kl["top1_agreement"],
        **{f"mmlu{k}": benchmarks.mmlu(backend, mmlu, shots, k, "tulu", 400, False, **args).outputs for k in (0, 2)},
        **{
            f"gsm_{cot}": benchmarks.gsm(backend, gsm, exemplars, cot, "tulu", 16, False, **args).outputs
            for cot in (False, True)
        },
        **{
            f"bbh_{cot}": benchmarks.bbh(backend, bbh, task_prompts, cot, "tulu", 16, False, **args).outputs
            for cot in (False, True)
        },
        **{
            f"tydiqa_{p}": benchmarks.tydiqa(backend, QA, {"english": QA[:1]}, p, "tulu", 32, 12, False, **args).outputs
            for p in (True, False)
        },
        "codex": [
            p["first_completion"]
            for p in benchmarks.codex(
                backend, PROBLEMS, "tulu", False, greedy, 2, [1], limits, 2, False, **args
            ).outputs
        ],
        "alpaca": benchmarks.generate_answers(
            backend, ["Say yes.", "Where does the river run?", "Add two numbers"], "tulu", 16, NOOP, True, batch_size
        ),
    }


@pytest.mark.parametrize("kind", ["torch", "gguf"])
def test_every_benchmark_gives_the_same_results_in_batches(kind, request, tmp_path):
    backend = request.getfixturevalue("backend" if kind == "torch" else "gguf_backend")
    one = every_benchmark(backend, 1, tmp_path / "one")
    assert one["kl_tokens"] == 5 * 23 and one["top1"] == 100.0
    assert any(one["gsm_False"]) and any(one["alpaca"])  # the tiny model does say something
    for size in (3, "auto"):
        batched = every_benchmark(backend, size, tmp_path / str(size))
        assert batched == one, size


def test_batches_go_longest_first_and_auto_sizes_from_memory(backend, monkeypatch):
    assert [list(b) for b in decode.longest_first([3, 9, 1, 9, 4], 2)] == [[1, 3], [4, 0], [2]]
    shape = decode.model_shape(backend.path)
    assert (shape.layers, shape.hidden, shape.kv_heads * shape.head_dim, shape.vocab) == (
        2,
        64,
        32,
        len(backend.tokenizer),
    )
    need = decode.row_bytes(shape, 100, 1)
    monkeypatch.setattr(decode, "free_memory", lambda b: int(need * 2 * 5.5))
    assert decode.resolve_batch_size(backend, "auto", 100) == 5
    monkeypatch.setattr(decode, "free_memory", lambda b: 10**15)
    assert decode.resolve_batch_size(backend, "auto", 100) == decode.MAX_AUTO_BATCH
    monkeypatch.setattr(decode, "free_memory", lambda b: 1)
    assert decode.resolve_batch_size(backend, "auto", 100) == 1
    assert decode.resolve_batch_size(backend, 7, 100) == 7
    # scoring on a CPU is not batched (compute-bound); on a GPU it is sized like generation
    monkeypatch.setattr(decode, "free_memory", lambda b: 10**15)
    assert decode.resolve_batch_size(backend, "auto", 100, scoring=True) == 1
    monkeypatch.setattr(type(backend), "on_gpu", property(lambda self: True))
    assert decode.resolve_batch_size(backend, "auto", 100, scoring=True) == decode.MAX_AUTO_BATCH


def test_sampled_batches_are_seeded_per_batch(backend):
    prompt = "def add(a, b):\n"
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=11)
    ones = decode.complete_many(backend, [prompt] * 4, settings, False, batch_size=1)
    # batch size 1 seeds the prompt at position i with seed + i, as a single call with that seed does
    for i, (text, _) in enumerate(ones):
        alone = decode.complete(backend, prompt, settings.model_copy(update={"seed": 11 + i}), False)
        assert text == alone[0]
    assert decode.complete_many(backend, [prompt] * 4, settings, False, batch_size=4) == decode.complete_many(
        backend, [prompt] * 4, settings, False, batch_size=4
    )
    assert len({text for text, _ in ones}) > 1


def test_scoring_windows_in_batches_matches_numpy(backend):
    tokens = backend.tokenizer(TEXT * 3, add_special_tokens=False).input_ids
    windows = perplexity.make_windows(tokens, 16, None, max_windows=4)
    nll = perplexity.score_windows(backend, windows, NOOP, 4)
    expected = [perplexity.token_nll(backend.logits(ids), ids).mean() for ids in windows.inputs]
    np.testing.assert_allclose(nll, expected, rtol=1e-5)
