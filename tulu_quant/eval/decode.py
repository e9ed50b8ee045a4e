"""Prompt text -> model answer, on any backend: encoding, answer-letter scoring, generation with stop strings."""

from __future__ import annotations

from ..backends import GenerationSettings


def encode(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt, with BOS when the tokenizer adds one (chat.render leaves it out of the text)."""
    return list(tokenizer(prompt).input_ids)


def stop_ids_of(tokenizer) -> tuple[int, ...]:
    eos = tokenizer.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def letter_ids(tokenizer, letters: tuple[str, ...]) -> list[int]:
    """The token of " A", " B", ... as it follows "The answer is:" (the last token of the encoding, as open-instruct)."""
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


def cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    positions = [text.find(s) for s in stops if s and s in text]
    return text[: min(positions)] if positions else text


def complete(backend, prompt: str, settings: GenerationSettings, stops: tuple[str, ...] = ()) -> tuple[str, bool]:
    """Generate after a prompt until EOS, a stop string or max_new_tokens. Returns (text before any stop, truncated)."""
    tokenizer = backend.tokenizer
    ids, truncated = fit_prompt(encode(tokenizer, prompt), backend.context_length, settings.max_new_tokens)
    produced: list[int] = []

    def on_token(token: int) -> bool:
        produced.append(token)
        return bool(stops) and any(s in tokenizer.decode(produced[-64:], skip_special_tokens=True) for s in stops)

    new = backend.generate(ids, settings, on_token if stops else None, stop_ids_of(tokenizer))
    return cut_at_stops(tokenizer.decode(new, skip_special_tokens=True), stops), truncated
