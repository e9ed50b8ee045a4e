"""Prompt text -> model answer, on any backend: encoding, answer-letter scoring, generation with stop strings."""

from __future__ import annotations

from ..chat import TextStream, stop_token_ids
from ..config import GenerationSettings


def encode(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt, with BOS when the tokenizer adds one (chat.render leaves it out of the text)."""
    return list(tokenizer(prompt).input_ids)


def letter_ids(tokenizer, letters: tuple[str, ...]) -> list[int]:
    """The token of " A", " B", ... as it follows "The answer is:" (the last token of the encoding, as
    open-instruct)."""
    return [tokenizer.encode(" " + letter, add_special_tokens=False)[-1] for letter in letters]


def pick_choice(backend, ids: list[int], choice_ids: list[int]) -> tuple[int, list[float]]:
    """(index of the highest-scoring choice, the choices' logits) from the next-token logits after the prompt."""
    last = backend.logits(ids)[-1]
    scores = [float(last[c]) for c in choice_ids]
    return max(range(len(scores)), key=scores.__getitem__), scores


def fit_prompt(ids: list[int], context_length: int, max_new_tokens: int) -> tuple[list[int], bool]:
    """Keep the prompt's last tokens when prompt + answer would not fit the context. Returns (ids, truncated)."""
    room = max(context_length - max_new_tokens, context_length // 2)
    return (ids[-room:], True) if len(ids) > room else (ids, False)


def complete(backend, prompt: str, settings: GenerationSettings, stops: tuple[str, ...] = ()) -> tuple[str, bool]:
    """Generate after a prompt until an EOS id, a stop string or max_new_tokens (tulu_quant.chat's conventions, as
    the demo and `tulu-quant generate` apply them). Returns (text before any stop, prompt truncated)."""
    tokenizer = backend.tokenizer
    ids, truncated = fit_prompt(encode(tokenizer, prompt), backend.context_length, settings.max_new_tokens)
    stream = TextStream(tokenizer, list(stops))
    backend.generate(ids, settings, stream.add if stops else stream.ids.append, stop_token_ids(tokenizer, backend.path))
    return stream.finish(), truncated
