"""VllmBackend against a fake OpenAI-compatible completions server on 127.0.0.1 that answers as vLLM does (token ids
in and out, prompt_logprobs keyed by token id): request bodies, per-row seeds and budgets, row ends, log-probabilities,
the server command line and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_http import json_endpoint
from tiny import bpe_tokenizer, save_tiny_hf

from tulu_quant.backends import vllm_backend
from tulu_quant.backends.vllm_backend import VllmBackend, VllmError, VllmServer
from tulu_quant.config import GenerationSettings
from tulu_quant.errors import MissingLibrary


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_hf(tmp_path_factory.mktemp("tiny"), bpe_tokenizer("The quick brown fox jumps over the lazy dog."))


def complete(body: dict) -> dict:
    """vLLM's reply, made up: the prompt's ids + 1 (mod 50) as the generation, cut at stop_token_ids as vLLM does (the
    stop id itself included) and at max_tokens; prompt log-probabilities -0.1 * token id."""
    choices = []
    for index, ids in enumerate(body["prompt"]):
        choice = {"index": index, "text": ""}
        if body.get("prompt_logprobs") is not None:
            choice["prompt_logprobs"] = [None] + [{str(t): {"logprob": -0.1 * t, "rank": 1}} for t in ids[1:]]
        out = []
        for t in ids * 10:
            out.append((t + 1) % 50)
            if out[-1] in body.get("stop_token_ids", []) or len(out) == body["max_tokens"]:
                break
        choice["token_ids"] = out
        choices.append(choice)
    return {"choices": choices}


@pytest.fixture
def server():
    """(URL, the request bodies it received)."""
    with json_endpoint(complete) as (url, records):
        yield url, records


def bodies(records: list[dict]) -> list[dict]:
    return [r["body"] for r in records]


def test_generate_batch_sends_token_ids_and_ends_rows_as_the_other_backends(tiny, server):
    url, records = server
    backend = VllmBackend(tiny, url, model="tiny")
    prompts = [[3, 4, 5], [10, 11], [20] * 60]  # the last leaves room for 4 tokens in the 64-token context
    settings = GenerationSettings(max_new_tokens=6, temperature=0.8, top_p=0.9, seed=5)
    assert backend.generate_batch(prompts, settings) == [[4, 5, 6, 4, 5, 6], [11, 12, 11, 12, 11, 12], [21] * 4]
    sent = sorted(bodies(records), key=lambda b: b["prompt"][0][0])
    assert [b["prompt"] for b in sent] == [[p] for p in prompts]
    assert [b["max_tokens"] for b in sent] == [6, 6, 4] and [b["seed"] for b in sent] == [5, 6, 7]
    assert all(b["model"] == "tiny" and b["temperature"] == 0.8 and b["return_token_ids"] for b in sent)
    # a stop id ends a row without being returned; on_token ends it after that token
    records.clear()
    ends = backend.generate_batch(prompts[:2], settings, [None, lambda t: t == 12], stop_ids=(6,))
    assert ends == [[4, 5], [11, 12]] and all(b["stop_token_ids"] == [6] for b in bodies(records))
    assert backend.generate([3], GenerationSettings(max_new_tokens=2)) == [4, 4]


def test_token_logprobs_are_the_prompt_tokens_own(tiny, server):
    url, records = server
    backend = VllmBackend(tiny, url)
    assert backend.token_logprobs([[1, 2, 3], [7, 8]]) == [[-0.2, pytest.approx(-0.3)], [-0.8]]
    sent = records[0]["body"]
    assert sent["prompt_logprobs"] == 0 and sent["max_tokens"] == 1
    assert sent["model"] == "served"  # the name GET /v1/models gives, when none is passed
    with pytest.raises(VllmError, match="not logits"):
        backend.logits([1, 2])


def test_helpers_read_vllm_replies_and_build_the_server_command(tmp_path):
    assert vllm_backend.choice_token_ids({"logprobs": {"tokens": ["token_id:7", "token_id:9"]}}) == [7, 9]
    with pytest.raises(VllmError, match="no token ids"):
        vllm_backend.choice_token_ids({"text": "hi"})
    with pytest.raises(VllmError, match="lack the prompt's own token 3"):
        vllm_backend.prompt_token_logprobs({"prompt_logprobs": [None, {"2": -1.0}, {"4": -1.0}]}, [1, 2, 3])
    command = vllm_backend.server_command(Path("py"), Path("/m/gptq"), 8123, "float32", 512, eager=True)
    assert command[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enforce-eager" in command and command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--served-model-name") + 1] == "gptq"
    with pytest.raises(MissingLibrary, match="run `make vllm`"):
        VllmServer(tmp_path, tmp_path / "log", venv=tmp_path / "nowhere")


def test_an_unreachable_endpoint_is_one_sentence(tiny):
    url = f"http://127.0.0.1:{vllm_backend.free_port()}/v1"
    with pytest.raises(VllmError, match="check that the server is up"):
        VllmBackend(tiny, url, timeout_s=2)  # asks for the served model's name
    backend = VllmBackend(tiny, url, model="m", timeout_s=2)
    with pytest.raises(VllmError, match="check that the server is up"):
        backend.generate([1, 2], GenerationSettings(max_new_tokens=2))


def test_load_backend_reaches_vllm_by_name(tiny, server):
    from tulu_quant.backends import load_backend

    backend = load_backend(tiny, "vllm", endpoint=server[0])
    assert isinstance(backend, VllmBackend) and backend.describe()["endpoint"] == server[0]


def test_row_ends_keep_an_engines_eos_and_drop_what_follows():
    from tulu_quant.backends import RowEnds

    ends = RowEnds([5, 5], None, stop_ids=(9,), end_ids=(2,))
    for token in (4, 2, 0, 0):
        ends.add(0, token)
    for token in (4, 9, 2):
        ends.add(1, token)
    assert ends.new == [[4, 2], [4]] and ends.done == [True, True]


GPTQ_4_SYM = {"bits": 4, "sym": True, "group_size": 128, "desc_act": False}


@pytest.mark.parametrize(
    ("kind", "changes", "cuda", "flags", "refusal"),
    [
        ("torch", {}, None, frozenset(), None),
        ("onnx", {}, (8, 0), None, "does not load ONNX"),
        ("gptq", {}, (8, 0), None, None),
        ("gptq", {}, None, frozenset({"avx512f"}), None),
        ("gptq", {}, None, None, None),  # flags unknown: not held against it
        ("gptq", {}, None, frozenset({"avx2"}), "lacks AVX512"),
        ("gptq", {"sym": False}, (8, 0), None, "asymmetric GPTQ"),
        ("gptq", {"bits": 8}, (8, 0), None, None),
        ("gptq", {"bits": 8}, None, frozenset({"avx512f"}), "take 4 bits, not 8"),
        ("gptq", {"bits": 3}, (8, 0), None, "take 4 or 8 bits, not 3"),
        ("gptq", {"group_size": 96}, (8, 0), None, "not 96"),
        ("gptq", {"desc_act": True}, (8, 0), None, "desc_act"),
        ("gptq", {"desc_act": True, "group_size": -1}, (8, 0), None, None),  # no groups: reordering is a no-op
        ("gptq", {}, (7, 0), None, "7.5 or newer"),
    ],
)
def test_vllm_refusal_follows_vllms_own_checks(kind, changes, cuda, flags, refusal):
    found = vllm_backend.vllm_refusal(kind, {**GPTQ_4_SYM, **changes}, cuda, flags)
    assert found is None if refusal is None else refusal in found


def test_server_dtype_is_16_bit_for_gptq_and_float32_for_a_plain_model_on_a_cpu():
    assert vllm_backend.server_dtype("torch", cuda=False) == "float32"
    assert vllm_backend.server_dtype("gptq", cuda=False) == "bfloat16"
    assert vllm_backend.server_dtype("torch", cuda=True) == vllm_backend.server_dtype("gptq", cuda=True) == "float16"


def test_close_stops_only_a_server_the_backend_owns(tiny, server):
    class Server:
        stopped = 0

        def __exit__(self, *exc):
            Server.stopped += 1

    owned = VllmBackend(tiny, server[0], model="m", server=Server())
    owned.close()
    owned.close()
    VllmBackend(tiny, server[0], model="m").close()
    assert Server.stopped == 1
