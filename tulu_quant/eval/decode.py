"""Prompt text -> model answer, on any backend, as the protocol tokenizes and decodes (docs/protocol.md).

- Encoding: ``encode(tokenizer, prompt, bos)``: without special tokens (open-instruct-2023-06 tokenized prompts with
  ``add_special_tokens=False``), or with the tokenizer's own (its BOS) where the protocol adds them.
- Answers: the completion is ``decode(prompt + new)`` with the decoded prompt cut off, not ``decode(new)``: a
  sentencepiece tokenizer drops the leading space of a decoded sequence, and code completion depends on it.
- Stopping: at an EOS id (tulu_quant.chat.stop_token_ids), at a stop string (the answer is cut before it), or, for
  BBH, once the answer's first paragraph is complete.
"""

from __future__ import annotations

from ..chat import TextStream, cut_at_stops, stop_token_ids
from ..config import GenerationSettings


def encode(tokenizer, prompt: str, bos: bool) -> list[int]:
    """Token ids of a prompt: with the tokenizer's special tokens (its BOS) or without any."""
    return list(tokenizer(prompt, add_special_tokens=bos).input_ids)


def letter_ids(tokenizer, letters: tuple[str, ...]) -> list[int]:
    """The token of " A", " B", ... as it follows "The answer is:" (the last token of the encoding; with LLaMA's
    tokenizer the same token as open-instruct's encode("A")[0], "▁A")."""
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
    tokenizer = backend.tokenizer
    ids, truncated = fit_prompt(encode(tokenizer, prompt, bos), backend.context_length, settings.max_new_tokens)
    stream = ParagraphStop(tokenizer, []) if first_paragraph else TextStream(tokenizer, list(stops))
    on_token = stream.add if stops or first_paragraph else None
    new = backend.generate(ids, settings, on_token, stop_token_ids(tokenizer, backend.path))
    return cut_at_stops(completion_text(tokenizer, ids, new), stops), truncated
