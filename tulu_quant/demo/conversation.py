"""The demo's conversations: the chat component's history as messages, the checks on what a user sends, and fitting
a conversation into the model's context by leaving out its oldest exchanges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..chat import Message
from ..config import GenerationSettings
from ..errors import UserValueError


class InputError(UserValueError):
    """A message or conversation the demo refuses; the text is shown to the user as it is."""


def message_text(content: Any) -> str:
    """A chat component's message content (a string, or Gradio 6's list of parts) -> its text."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def to_messages(history: list[dict[str, Any]] | None) -> list[Message]:
    """The chat component's history -> [{"role", "content"}] for tulu_quant.chat.render."""
    return [
        {"role": m["role"], "content": message_text(m.get("content"))}
        for m in history or []
        if m.get("role") in ("system", "user", "assistant")
    ]


def check_message(text: str | None, max_chars: int) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError("Type a message first.")
    if len(text) > max_chars:
        raise InputError(
            f"Your message is {len(text):,} characters long; this demo accepts at most {max_chars:,}. "
            "Shorten it and send it again."
        )
    return text


def check_conversation(messages: list[Message], max_chars: int) -> None:
    total = sum(len(m["content"]) for m in messages)
    if total > max_chars:
        raise InputError(
            f"This conversation is {total:,} characters long (the limit is {max_chars:,}); press Clear "
            "to start a new one."
        )


def fit_messages(
    messages: list[Message], count: Callable[[list[Message]], int], budget: int
) -> tuple[list[Message], int]:
    """Leave out the oldest user/assistant exchanges until the prompt has at most `budget` tokens (system messages and
    the last user message are kept). Returns (messages, number of exchanges left out)."""
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    dropped = 0
    while count(system + turns) > budget:
        cut = next((i for i in range(1, len(turns)) if turns[i]["role"] == "user"), None)
        if cut is None:
            raise InputError(
                f"This message needs {count(system + turns):,} tokens but the model's context leaves "
                f"room for {max(budget, 0):,} with this many new tokens; shorten it or lower max new "
                "tokens."
            )
        turns, dropped = turns[cut:], dropped + 1
    return system + turns, dropped


def drop_last_answer(history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """For Regenerate: the history up to and including its last user message."""
    history = list(history or [])
    while history and history[-1].get("role") != "user":
        history.pop()
    if not history:
        raise InputError("Nothing to regenerate yet: send a message first.")
    return history


def settings_from_ui(
    max_new_tokens: float, temperature: float, top_p: float, repetition_penalty: float, seed: float | None
) -> GenerationSettings:
    """The page's controls -> GenerationSettings (a negative or empty seed: random)."""
    return GenerationSettings(
        max_new_tokens=max(1, int(max_new_tokens)),
        temperature=max(0.0, float(temperature)),
        top_p=min(1.0, max(1e-3, float(top_p))),
        repetition_penalty=max(1.0, float(repetition_penalty)),
        seed=None if seed is None or seed == "" or int(seed) < 0 else int(seed),
    )
