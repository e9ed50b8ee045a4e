"""Prompt text -> model answer, on any backend, as the protocol tokenizes and decodes (docs/protocol.md).

- Encoding: ``encode(tokenizer, prompt, bos)``: without special tokens (open-instruct-2023-06 tokenized prompts with
  ``add_special_tokens=False``), or with the tokenizer's own (its BOS) where the protocol adds them.
- Answers: the completion is ``decode(prompt + new)`` with the decoded prompt cut off, not ``decode(new)``: a
  sentencepiece tokenizer drops the leading space of a decoded sequence, and code completion depends on it.
- Stopping: at an EOS id (tulu_quant.chat.stop_token_ids), at a stop string (the answer is cut before it), or, for
  BBH, once the answer's first paragraph is complete.
- Batches: ``complete_many`` and ``last_logits_many`` sort the prompts by length (longest first, so padding stays small
  and the largest batch comes first), send ``batch_size`` at a time to the backend's batched operations, and return
  results in the prompts' order. Greedy answers do not depend on the batch size (tests/unit/eval/test_batching.py);
  sampled ones are seeded per batch (settings.seed + the batch's first position), so batch size 1 seeds each prompt
  with seed + its position.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from ..chat import TextStream, cut_at_stops, stop_token_ids
from ..config import GenerationSettings

Advance = Callable[..., None]
MAX_AUTO_BATCH = 32
MEMORY_SHARE = 0.5  # of the free memory a batch may take, by the estimate of row_bytes


def encode(tokenizer, prompt: str, bos: bool) -> list[int]:
    """Token ids of a prompt: with the tokenizer's special tokens (its BOS) or without any."""
    return list(tokenizer(prompt, add_special_tokens=bos).input_ids)


def letter_ids(tokenizer, letters: tuple[str, ...]) -> list[int]:
    """The token of " A", " B", ... as it follows "The answer is:" (the last token of the encoding; with LLaMA's
    tokenizer the same token as open-instruct's encode("A")[0], "▁A")."""
    return [tokenizer.encode(" " + letter, add_special_tokens=False)[-1] for letter in letters]


def fit_prompt(ids: list[int], context_length: int, max_new_tokens: int) -> tuple[list[int], bool]:
    """Keep the prompt's last tokens when prompt + answer would not fit the context. Returns (ids, truncated)."""
    room = max(context_length - max_new_tokens, context_length // 2)
    return (ids[-room:], True) if len(ids) > room else (ids, False)


def completion_text(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The answer as open-instruct decodes it: decode(prompt + answer) with the decoded prompt cut off."""
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    return tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)[len(prompt) :]


class ParagraphStop(TextStream):
    """Stops once the answer, leading whitespace aside, holds a blank line: its first paragraph is complete."""

    def add(self, token: int) -> bool:
        self.ids.append(token)
        return "\n\n" in self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()


def complete(
    backend,
    prompt: str,
    settings: GenerationSettings,
    bos: bool,
    stops: tuple[str, ...] = (),
    first_paragraph: bool = False,
) -> tuple[str, bool]:
    """Generate after a prompt until an EOS id, a stop string, max_new_tokens, or (first_paragraph) the end of the
    answer's first paragraph. Returns (the answer cut before any stop string, whether the prompt was truncated)."""
    return complete_many(backend, [prompt], settings, bos, stops, first_paragraph)[0]


# ------------------------------------------------------------------------------------------------------ batches


def longest_first(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of batch_size, the longest sequences first (a stable sort: equal lengths keep their order)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def model_shape(path: Path | None):
    """The model's shape (tulu_quant.plan.Shape) from a folder's config.json or genai_config.json (None: unknown).
    genai_config.json does not state the MLP width, which the row estimate does not use (0 there)."""
    from ..plan import Shape

    if path is None:
        return None
    config, genai = Path(path) / "config.json", Path(path) / "genai_config.json"
    if config.is_file():
        return Shape.from_config(json.loads(config.read_text()))
    if genai.is_file():
        m = json.loads(genai.read_text())["model"]
        d = m["decoder"]
        return Shape.from_config(
            {
                "num_hidden_layers": d["num_hidden_layers"],
                "hidden_size": d["hidden_size"],
                "intermediate_size": 0,
                "num_attention_heads": d["num_attention_heads"],
                "num_key_value_heads": d["num_key_value_heads"],
                "head_dim": d["head_size"],
                "vocab_size": m["vocab_size"],
            }
        )
    return None


def row_bytes(shape, tokens: int, logits_rows: int) -> int:
    """Estimated memory of one batch row: float32 K and V of every layer (plan.kv_cache_bytes), a few hidden-size
    activations per token, and logits_rows x vocab float32 logits (every position for scoring, one for generation),
    twice (a copy)."""
    from ..plan import kv_cache_bytes

    activations = tokens * 8 * shape.hidden * 4
    return kv_cache_bytes(shape, tokens, dtype_bytes=4) + activations + 2 * logits_rows * shape.vocab * 4


def free_memory(backend) -> int:
    """Bytes free where the backend computes: the CUDA device's, else the machine's available RAM."""
    if getattr(backend, "device", "cpu").startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


def resolve_batch_size(
    backend, batch_size: int | str, tokens: int, full_logits: bool = False, scoring: bool = False
) -> int:
    """An integer batch size as is; "auto": the largest up to MAX_AUTO_BATCH whose rows of `tokens` tokens fit in
    MEMORY_SHARE of the free memory by row_bytes (8 when the model's shape is unknown). Scoring (a forward pass over
    whole sequences, no decoding) on a CPU is 1: there the pass is compute-bound and batching it gains nothing (measured
    0.9-1.1x at batch 4-32 for every backend, docs/benchmarks.md) while its logits take memory; decoding gains (7.7x at
    batch 32 for the fp16 model). A server backend (vLLM) sets ``server_batch``: the requests in flight at once, which
    its own scheduler batches by its memory."""
    if batch_size != "auto":
        return int(batch_size)
    if getattr(backend, "server_batch", None):  # a server schedules its own batches: send it enough to fill them
        return int(backend.server_batch)
    if scoring and not getattr(backend, "on_gpu", False):
        return 1
    shape = model_shape(getattr(backend, "path", None))
    if shape is None:
        return 8
    need = row_bytes(shape, tokens, tokens if full_logits else 1)
    return max(1, min(MAX_AUTO_BATCH, int(free_memory(backend) * MEMORY_SHARE // max(need, 1))))


def complete_many(
    backend,
    prompts: list[str],
    settings: GenerationSettings,
    bos: bool,
    stops: tuple[str, ...] = (),
    first_paragraph: bool = False,
    batch_size: int | str = 1,
    advance: Advance = lambda n=1, **_: None,
) -> list[tuple[str, bool]]:
    """``complete`` for every prompt, batch by batch (longest prompts first); results in the prompts' order."""
    tokenizer, stop_ids = backend.tokenizer, stop_token_ids(backend.tokenizer, backend.path)
    fitted = [fit_prompt(encode(tokenizer, p, bos), backend.context_length, settings.max_new_tokens) for p in prompts]
    if not fitted:
        return []
    size = resolve_batch_size(backend, batch_size, max(len(ids) for ids, _ in fitted) + settings.max_new_tokens)
    out: list[tuple[str, bool]] = [("", False)] * len(prompts)
    for position, batch in enumerate(longest_first([len(ids) for ids, _ in fitted], size)):
        streams = [
            ParagraphStop(tokenizer, []) if first_paragraph else TextStream(tokenizer, list(stops)) for _ in batch
        ]
        on_tokens = [s.add if stops or first_paragraph else None for s in streams]
        seeded = settings
        if settings.seed is not None:
            seeded = settings.model_copy(update={"seed": settings.seed + position * size})
        new = backend.generate_batch([fitted[i][0] for i in batch], seeded, on_tokens, stop_ids)
        for index, tokens in zip(batch, new):
            ids, truncated = fitted[index]
            out[index] = (cut_at_stops(completion_text(tokenizer, ids, tokens), stops), truncated)
        advance(len(batch))
    return out


def last_logits_many(
    backend, seqs: list[list[int]], batch_size: int | str = 1, advance: Advance = lambda n=1, **_: None
):
    """Each sequence's next-token logits after its last token, [len(seqs), vocab], batch by batch."""
    import numpy as np

    if not seqs:
        return np.zeros((0, len(backend.tokenizer)), dtype=np.float32)
    size = resolve_batch_size(backend, batch_size, max(map(len, seqs)), scoring=True)
    out = [None] * len(seqs)
    for batch in longest_first([len(s) for s in seqs], size):
        for index, row in zip(batch, backend.logits_batch([seqs[i] for i in batch], last_only=True)):
            out[index] = row
        advance(len(batch))
    return np.stack(out)
