"""vLLM serves what this project makes, checked against transformers on the same folder: a tiny random LLaMA and the
stand-in in float32 (on every CPU), their 4-bit GPTQ checkpoints (where the CPU has what vLLM's 4-bit kernel needs,
AVX512; elsewhere the test names the missing instruction set, a hardware condition like the `gpu` tests'), and
`validate --engine vllm` agreeing with the native backend on the stand-in's suite.

The servers run from `.venv-vllm/`, which `make test` builds first (`make vllm`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import SHARED_DATA
from tiny import bpe_tokenizer, run_config, save_tiny_hf, write_calibration

from tulu_quant.backends import load_backend
from tulu_quant.backends.vllm_backend import serve, vllm_refusal
from tulu_quant.config import GenerationSettings, QuantizeConfig, SuiteConfig
from tulu_quant.hardware import cpu_info
from tulu_quant.stages.validate import quantization_of

pytestmark = pytest.mark.slow

VENV = Path(__file__).resolve().parents[2] / ".venv-vllm"
TEXT = "The quick brown fox jumps over the lazy dog. A server answers many prompts at once, batch by batch."
LOGPROB_TOLERANCE = 0.05  # mean absolute difference of prompt log-probabilities (nats), as the issue sets it


@pytest.fixture(scope="module")
def venv() -> Path:
    if not (VENV / "bin" / "python").is_file():
        pytest.fail(f"{VENV} is missing: run `make vllm` (make test builds it before the tests)")
    return VENV


def refusal_here(path: Path) -> str | None:
    return vllm_refusal("gptq", quantization_of(path), None, cpu_info().flags)


def transformers_logprobs(path: Path, seqs: list[list[int]]) -> list[np.ndarray]:
    """log p(ids[t] | ids[:t]) for t >= 1 from the native backend (transformers; GPTQModel for a GPTQ folder)."""
    from tulu_quant.eval.perplexity import token_nll

    backend = load_backend(path, device="cpu")
    return [-token_nll(logits, ids) for ids, logits in zip(seqs, backend.logits_batch(seqs))]


def mean_abs_difference(served: list[list[float]], native: list[np.ndarray]) -> float:
    return float(np.mean(np.abs(np.concatenate([np.asarray(s) for s in served]) - np.concatenate(native))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 2-layer random LLaMA with vLLM-sized heads (head_dim 64), float32, sharpened so greedy choices are clear."""
    tokenizer = bpe_tokenizer(TEXT, specials=("<s>", "</s>", "<unk>"), repeat=50, bos_prefix=False)
    widths = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2}
    root = tmp_path_factory.mktemp("tiny-vllm")
    return save_tiny_hf(root, tokenizer, dtype=torch.float32, head_scale=8.0, max_position_embeddings=256, **widths)


def prompts_of(path: Path, texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def test_a_float32_model_in_vllm_scores_and_generates_as_transformers(venv, tiny, tmp_path):
    seqs = prompts_of(tiny, [TEXT, "The lazy dog answers the quick fox.", "Many prompts at once"])
    native = transformers_logprobs(tiny, seqs)
    settings = GenerationSettings(max_new_tokens=12, temperature=0.0)
    expected = load_backend(tiny, device="cpu").generate_batch(seqs, settings)
    backend = serve(tiny, "torch", tmp_path / "vllm.log", venv, kv_cache_gib=1)
    try:
        served = backend.token_logprobs(seqs)
        answers = backend.generate_batch(seqs, settings)
    finally:
        backend.close()
    assert backend.server is None  # stopped
    assert mean_abs_difference(served, native) < 1e-3  # float32 on both sides: rounding only
    assert answers == expected


@pytest.fixture(scope="module", params=["gptq", "autoround"])
def tiny_gptq(tiny, tmp_path_factory, request) -> Path:
    """The tiny model at 4 bits, g64, symmetric (what vLLM takes), from random calibration rows, by GPTQModel's GPTQ
    and by AutoRound (2 tuning steps per layer; its export names itself in quantization_config)."""
    from tulu_quant.stages import quantize

    root = tmp_path_factory.mktemp(f"tiny-{request.param}")
    calib = write_calibration(tiny, root / "calib", n=16, length=64, vocab=300)
    method = {"method": "autoround", "autoround_iters": 2, "batch_size": 4} if request.param == "autoround" else {}
    settings = QuantizeConfig(bits=4, group_size=64, sym=True, offload_to_disk=False, device="cpu", **method)
    cfg = run_config(quantize=settings, model__chat_format="tulu")
    return quantize.run(cfg, tiny, root / "gptq", calib, log_file=root / "gptq.log").out


def served_gptq_logprobs(venv: Path, path: Path, seqs: list[list[int]], log: Path):
    reason = refusal_here(path)
    if reason:
        pytest.skip(f"hardware: {reason}")
    backend = serve(path, "gptq", log, venv, kv_cache_gib=1)
    try:
        served = backend.token_logprobs(seqs)
        answer = backend.generate_batch(seqs[:1], GenerationSettings(max_new_tokens=8, temperature=0.0))[0]
    finally:
        backend.close()
    return served, answer


def test_our_4bit_gptq_checkpoint_loads_in_vllm_close_to_transformers(venv, tiny_gptq, tmp_path):
    seqs = prompts_of(tiny_gptq, [TEXT, "The lazy dog answers the quick fox."])
    served, answer = served_gptq_logprobs(venv, tiny_gptq, seqs, tmp_path / "vllm.log")
    assert mean_abs_difference(served, transformers_logprobs(tiny_gptq, seqs)) < LOGPROB_TOLERANCE
    assert len(answer) > 0


def standin_windows(path: Path, count: int = 2, length: int = 256) -> list[list[int]]:
    from transformers import AutoTokenizer

    from tulu_quant.data import get_source
    from tulu_quant.eval.perplexity import make_windows, tokenize_documents

    ids = tokenize_documents(AutoTokenizer.from_pretrained(path), get_source("wiki").documents("evaluation")[:8])
    return make_windows(ids, length, None, count).inputs


def test_the_standins_4bit_checkpoint_loads_in_vllm_close_to_transformers(venv, standin_gptq, tmp_path):
    seqs = standin_windows(standin_gptq.out)
    served, answer = served_gptq_logprobs(venv, standin_gptq.out, seqs, tmp_path / "vllm.log")
    assert mean_abs_difference(served, transformers_logprobs(standin_gptq.out, seqs)) < LOGPROB_TOLERANCE
    assert len(answer) > 0


def test_validate_through_vllm_agrees_with_the_native_backend_on_the_standin(venv, standin, tmp_path):
    """A trimmed stand-in suite (its greedy benchmarks, Codex-Eval at temperature 0, and perplexity; AlpacaFarm off),
    once natively and once with engine vllm: perplexity within 1 %, greedy answers equal, KL and MMLU on the native
    backend in both."""
    from tulu_quant.config import load_suite
    from tulu_quant.stages import validate

    suite = load_suite("standin").model_dump()
    suite["perplexity"].update(max_windows=4, source_windows={"shakespeare": 2}, kl_windows=2)
    suite["mmlu"].update(shots=[0], subjects=2, per_subject=2)
    suite["gsm"].update(examples=2, modes=["cot"], shots=1, max_new_tokens=48)  # a chain of thought, cut short
    suite["bbh"].update(modes=["direct"], max_new_tokens=32)
    suite["tydiqa"].update(modes=["goldp"], per_language=1)
    # HumanEval comes from a pinned wheel, so one greedy benchmark runs even without the shared data folder
    suite["codex"].update(problems=2, samples=1, temperatures={1: 0.0}, max_new_tokens=48)
    suite["alpaca"]["enabled"] = False
    suite = SuiteConfig.model_validate(suite)
    reports = {}
    for engine in ("native", "vllm"):
        cfg = run_config(
            model__chat_format="tokenizer",
            model__context_length=512,
            validate={"engine": engine, "data_dir": str(SHARED_DATA.resolve()), "vllm_venv": str(venv), "gates": []},
        )
        log_file = tmp_path / "validate.log"
        reports[engine] = validate.run(cfg, standin, [], tmp_path / engine, suite, log_file=log_file).report
    native, served = (reports[e]["reference"] for e in ("native", "vllm"))
    ran = {k: t["engine"] for k, t in served["timings"].items() if not t["skipped"]}
    assert ran == {k: "native" if k == "kl" or k.startswith("mmlu") else "vllm" for k in ran}
    for key in ("ppl.wiki", "ppl.shakespeare"):
        assert served["metrics"][key]["value"] == pytest.approx(native["metrics"][key]["value"], rel=0.01)
    greedy = [k for k in ran if k.split("_")[0] in ("gsm", "bbh", "tydiqa", "codex")]
    assert greedy, "no greedy benchmark ran"
    for key in greedy:
        assert outputs(tmp_path / "vllm", standin, key) == outputs(tmp_path / "native", standin, key), key
    assert (tmp_path / f"vllm-{standin.name}.log").is_file()  # the server's log, beside the run's


def outputs(report_dir: Path, model: Path, job: str) -> list:
    """The answers a job stored in the report's work folder."""
    (folder,) = report_dir.parent.glob(f".{report_dir.name}.work/{model.name}-*")
    return json.loads((folder / f"{job}.json").read_text())["result"]["outputs"]
