"""Tokens per second by batch size: `python -m benchmarks.bench_batch --run-dir RUN --out DIR [--sizes 1 4 16 32]`.

For each backend of a finished stand-in run (the fp16 model through transformers in float32, the GPTQ checkpoint
through transformers + GPTQModel's CPU kernel, the int4 ONNX export through onnxruntime-genai), side by side in one
process, one backend loaded at a time:

- generation: BATCH prompts of one length (PROMPT_TOKENS tokens of the wiki evaluation text, each starting at another
  offset), NEW_TOKENS greedy tokens each with no stop, through ``generate_batch``; tokens/s = BATCH x NEW_TOKENS /
  seconds (prefill included).
- scoring: BATCH windows of SCORE_TOKENS tokens through ``logits_batch`` (every position's logits); tokens/s =
  BATCH x SCORE_TOKENS / seconds.

Every figure is the best of REPEATS runs after one warm-up. The transformers rows also time, at batch 1, our former
hand-written decode loop over the KV cache (kept here only as the measurement the backend's choice rests on).

With ``--vllm`` the fp16 model (float32) and the GPTQ checkpoint (bfloat16: vLLM's GPTQ takes 16-bit activations) are
also served by vLLM's CPU build from .venv-vllm/ (where vllm_refusal says it loads them), the same prompts sent as
BATCH concurrent requests; its scoring row is ``token_logprobs`` (the windows' own tokens' log-probabilities: a server
returns no full logits).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .common import load_average, machine, shown

PROMPT_TOKENS, NEW_TOKENS, SCORE_TOKENS, REPEATS = 64, 32, 256, 2


def wiki_tokens(tokenizer, count: int) -> list[int]:
    from tulu_quant.data import get_source

    text = "\n\n".join(get_source("wiki").documents("evaluation"))
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) < count:
        raise SystemExit(f"the wiki evaluation text has {len(ids)} tokens, fewer than the {count} needed")
    return ids[:count]


def best_of(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def hand_loop(backend, ids: list[int], new_tokens: int) -> list[int]:
    """The decode loop the transformers backend used before it called transformers' generate: greedy over the KV
    cache, one token per forward pass."""
    import torch

    model, cache, out = backend.model, None, []
    step = torch.tensor([ids])
    with torch.inference_mode():
        for _ in range(new_tokens):
            result = model(input_ids=step, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = result.past_key_values
            token = int(result.logits[0, -1].argmax())
            out.append(token)
            step = torch.tensor([[token]])
    return out


def measure(backend, sizes: list[int]) -> dict[str, Any]:
    from tulu_quant.config import GenerationSettings

    largest = max(sizes)
    tokens = wiki_tokens(backend.tokenizer, largest * (SCORE_TOKENS + PROMPT_TOKENS))
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, temperature=0.0)
    score = backend.token_logprobs if hasattr(backend, "token_logprobs") else backend.logits_batch
    rows = []
    for size in sizes:
        prompts = [tokens[i * PROMPT_TOKENS : (i + 1) * PROMPT_TOKENS] for i in range(size)]
        windows = [tokens[i * SCORE_TOKENS : (i + 1) * SCORE_TOKENS] for i in range(size)]
        generated = best_of(lambda p=prompts: backend.generate_batch(p, settings))
        scored = best_of(lambda w=windows: score(w))
        rows.append(
            {
                "batch": size,
                "generate_tokens_per_s": round(size * NEW_TOKENS / generated, 1),
                "score_tokens_per_s": round(size * SCORE_TOKENS / scored, 1),
            }
        )
    result: dict[str, Any] = {"rows": rows}
    if backend.kind in ("torch", "gptq"):
        prompt = tokens[:PROMPT_TOKENS]
        same = hand_loop(backend, prompt, NEW_TOKENS) == backend.generate(prompt, settings)
        loop = best_of(lambda: hand_loop(backend, prompt, NEW_TOKENS))
        result["hand_loop_batch1_tokens_per_s"] = round(NEW_TOKENS / loop, 1)
        result["hand_loop_same_tokens"] = same
    return result


def markdown(result: dict[str, Any]) -> str:
    sizes = [r["batch"] for r in next(b for b in result["backends"] if "rows" in b)["rows"]]
    head = " | ".join(f"batch {s}" for s in sizes)
    lines = [
        f"Command: `{result['command']}`. Machine: {result['machine']}; load average {result['load_before']} before, "
        f"{result['load_after']} after. Generation: {NEW_TOKENS} greedy tokens after {PROMPT_TOKENS}-token prompts "
        f"(prefill included); scoring: {SCORE_TOKENS}-token windows, every position's logits (vLLM: the windows' own "
        f"tokens' log-probabilities, which is what perplexity needs). Best of {REPEATS} after "
        "a warm-up; in parentheses the speed-up over batch 1.",
        "",
        f"| backend | operation | {head} |",
        "| --- | --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for b in result["backends"]:
        if "refused" in b:
            lines.append(f"| {b['name']} | not loaded: {b['refused']} |" + " |" * len(sizes))
            continue
        for op, key in (("generate", "generate_tokens_per_s"), ("score", "score_tokens_per_s")):
            base = b["rows"][0][key]
            cells = " | ".join(f"{r[key]:.0f} tok/s ({r[key] / base:.1f}x)" for r in b["rows"])
            lines.append(f"| {b['name']} | {op} | {cells} |")
    loops = [b for b in result["backends"] if "hand_loop_batch1_tokens_per_s" in b]
    if loops:
        lines.append("")
        lines.append(
            "transformers' `generate` vs our former hand-written decode loop, batch 1: "
            + "; ".join(
                f"{b['name']}: generate {b['rows'][0]['generate_tokens_per_s']:.0f} tok/s, loop "
                f"{b['hand_loop_batch1_tokens_per_s']:.0f} tok/s (same tokens: {b['hand_loop_same_tokens']})"
                for b in loops
            )
            + "."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_batch")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--vllm", action="store_true", help="also through vLLM's CPU build (.venv-vllm/)")
    args = parser.parse_args(argv)
    from tulu_quant.backends import load_backend
    from tulu_quant.backends.vllm_backend import serve, vllm_refusal
    from tulu_quant.hardware import cpu_info
    from tulu_quant.stages.validate import quantization_of

    args.out.mkdir(parents=True, exist_ok=True)
    before = shown(load_average())
    backends = []
    for name, folder, options in (
        ("fp16 model (transformers, float32 compute)", "recovered", {}),
        ("GPTQ 4-bit (transformers + GPTQModel CPU kernel)", "gptq", {}),
        ("int4 ONNX (onnxruntime-genai)", "onnx", {}),
    ):
        path = args.run_dir / folder
        if not path.is_dir():
            continue
        backend = load_backend(path, **options)
        backends.append({"name": name, "path": str(path), **measure(backend, args.sizes)})
        del backend
    for name, folder, kind in (
        ("fp16 model (vLLM CPU, float32)", "recovered", "torch"),
        ("GPTQ 4-bit (vLLM CPU, bfloat16)", "gptq", "gptq"),
    ):
        path = args.run_dir / folder
        if not args.vllm or not path.is_dir():
            continue
        refusal = vllm_refusal(kind, quantization_of(path), None, cpu_info().flags)
        if refusal:
            backends.append({"name": name, "path": str(path), "refused": refusal})
            continue
        backend = serve(path, kind, args.out / f"vllm-{folder}.log")
        try:
            backends.append(
                {
                    "name": name,
                    "path": str(path),
                    "ready_s": round(backend.server.ready_s, 1),
                    **measure(backend, args.sizes),
                }
            )
        finally:
            backend.close()
    result = {
        "command": f"python -m benchmarks.bench_batch --run-dir RUN --sizes {' '.join(map(str, args.sizes))}"
        + (" --vllm" if args.vllm else ""),
        "machine": machine(),
        "load_before": before,
        "load_after": shown(load_average()),
        "backends": backends,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    (args.out / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
