"""Prompt conventions, in one place for every backend, command and output folder: how a conversation becomes text,
which format a folder uses, where an answer stops, and how a streamed answer is cut there.

``tulu`` is open-instruct's format (note the newlines; an assistant turn ends with the EOS token and a newline)::

    <|user|>\\n{u}\\n<|assistant|>\\n{a}</s>\\n<|user|>\\n{u2}\\n<|assistant|>\\n

It is shipped as a Jinja ``chat_template`` in the tokenizer_config of every model directory we write, so
``tokenizer.apply_chat_template``, vLLM and onnxruntime-genai format prompts exactly as ``render`` does.
``tokenizer`` uses the model's own template (the stand-in's is ChatML). ``auto`` resolves per folder: tulu when the
tokenizer has no template or carries ours, tokenizer when it ships another (``resolve_format``).

An answer ends at an EOS id (the tokenizer's and the folder's generation_config.json, ``stop_token_ids``) or where the
model starts another turn (``stop_strings``); ``TextStream`` writes it as it grows and cuts it before a stop string.
Generation (tulu_quant.generate), the demo and validation all use these, so one prompt gives one text everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .errors import UserValueError

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
ChatFormat = Literal["tulu", "tokenizer"]
REQUESTABLE = ("auto", "tulu", "tokenizer", "none")  # none: the raw text, no chat format (tulu-quant generate)

TULU_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

ROLES = ("system", "user", "assistant")


def render_tulu(messages: list[Message], eos_token: str = "</s>", add_generation_prompt: bool = True) -> str:
    """The tulu format in plain Python (the Jinja template above must agree; a test checks that)."""
    parts = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant":
            parts.append(f"<|assistant|>\n{content}{eos_token}\n")
        elif role in ("user", "system"):
            parts.append(f"<|{role}|>\n{content}\n")
        else:
            raise UserValueError(f"unknown chat role {role!r}; use one of {ROLES}")
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def render(messages: list[Message], tokenizer, fmt: ChatFormat, add_generation_prompt: bool = True) -> str:
    """Conversation -> prompt text (without BOS: the tokenizer adds it when encoding)."""
    if fmt == "tulu":
        return render_tulu(messages, tokenizer.eos_token or "</s>", add_generation_prompt)
    if fmt != "tokenizer":
        raise UserValueError(f"chat format {fmt!r} cannot render a conversation; use tulu or tokenizer.")
    if not getattr(tokenizer, "chat_template", None):
        raise UserValueError("chat_format 'tokenizer' needs a tokenizer with a chat_template; use chat_format: tulu.")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and adds_bos(tokenizer):  # encoding adds it again: keep exactly one
        return text[len(bos) :]
    return text


def adds_bos(tokenizer) -> bool:
    """Whether encoding text prepends the BOS token (LLaMA's tokenizer does; SmolLM2's, whose BOS is <|im_start|>,
    does not)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    return bos_id is not None and tokenizer("a").input_ids[:1] == [bos_id]


def resolve_format(requested: str, tokenizer) -> str:
    """A requested format -> the one to use with this tokenizer. auto: tulu when the tokenizer has no template or
    carries ours (every folder we write does, for the tulu format), tokenizer when it ships another template."""
    if requested not in REQUESTABLE:
        raise UserValueError(f"chat format '{requested}' is not one of {list(REQUESTABLE)}.")
    if requested != "auto":
        return requested
    template = getattr(tokenizer, "chat_template", None)
    return "tokenizer" if template and template != TULU_TEMPLATE else "tulu"


def prompt_ids(tokenizer, messages: list[Message], fmt: str) -> list[int]:
    """Token ids of a conversation ending with the user's turn, ready for the answer (BOS when the tokenizer adds
    one). fmt none: the last message's text as it is, no chat format."""
    if fmt == "none":
        return list(tokenizer(messages[-1]["content"]).input_ids)
    return list(tokenizer(render(messages, tokenizer, fmt)).input_ids)


def install_template(model_dir: Path, fmt: ChatFormat) -> None:
    """Write the format's template into model_dir's tokenizer_config.json (and chat_template.jinja, which
    transformers 5 and onnxruntime-genai read), so every consumer formats prompts the same way."""
    if fmt != "tulu":
        return
    model_dir = Path(model_dir)
    cfg_path = model_dir / "tokenizer_config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    config["chat_template"] = TULU_TEMPLATE
    cfg_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (model_dir / "chat_template.jinja").write_text(TULU_TEMPLATE)


def stop_strings(fmt: str) -> list[str]:
    """Text before which a generated answer is cut (the model starting the next turn)."""
    return ["<|user|>", "<|assistant|>"] if fmt == "tulu" else []


def stop_token_ids(tokenizer, folder: Path | None = None) -> tuple[int, ...]:
    """Ids that end an answer: the tokenizer's EOS plus every EOS id of the folder's generation_config.json."""
    eos = tokenizer.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    config = Path(folder) / "generation_config.json" if folder is not None else None
    if config is not None and config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return tuple(sorted(int(i) for i in ids))


def cut_at_stops(text: str, stops: list[str] | tuple[str, ...]) -> str:
    """The text before the first stop string in it (all of it when none appears)."""
    positions = [text.find(s) for s in stops if s and s in text]
    return text[: min(positions)] if positions else text


class TextStream:
    """Turn token ids into text pieces as they arrive: decodes the whole answer each time (so multi-byte characters
    and merged spaces come out right), holds back an incomplete character and anything that may be the start of a
    stop string, and reports when a stop string appeared (the answer is cut before it)."""

    def __init__(self, tokenizer, stops: list[str], write: Callable[[str], Any] | None = None):
        self.tokenizer, self.stops, self.write = tokenizer, list(stops), write or (lambda piece: None)
        self.ids: list[int] = []
        self.text = ""  # what has been written
        self.stopped = False

    def _safe_end(self, text: str) -> int:
        """Length of the prefix that can be written: no trailing replacement character (a character whose bytes are
        still coming) and no tail that could grow into a stop string."""
        end = len(text.rstrip("\ufffd"))
        held = 0
        for stop in self.stops:
            held = max([held] + [k for k in range(1, min(len(stop), end + 1)) if text[:end].endswith(stop[:k])])
        return end - held

    def add(self, token: int) -> bool:
        """Add one token; True when a stop string ended the answer."""
        self.ids.append(token)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = cut_at_stops(full, self.stops)
        if len(cut) < len(full):
            self._emit(cut)
            self.stopped = True
            return True
        self._emit(full[: self._safe_end(full)])
        return False

    def finish(self) -> str:
        """The whole answer, cut before the first stop string; writes what has not been written yet."""
        answer = cut_at_stops(self.tokenizer.decode(self.ids, skip_special_tokens=True), self.stops)
        self._emit(answer)
        return answer

    def _emit(self, upto: str) -> None:
        if len(upto) > len(self.text) and upto.startswith(self.text):
            self.write(upto[len(self.text) :])
            self.text = upto
