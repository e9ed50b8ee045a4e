"""Prompt formats. One place decides how a conversation becomes text, for every backend and every output folder.

``tulu`` is open-instruct's format (note the newlines; an assistant turn ends with the EOS token and a newline)::

    <|user|>\\n{u}\\n<|assistant|>\\n{a}</s>\\n<|user|>\\n{u2}\\n<|assistant|>\\n

It is shipped as a Jinja ``chat_template`` in the tokenizer_config of every model directory we write, so
``tokenizer.apply_chat_template``, vLLM and onnxruntime-genai format prompts exactly as ``render`` does.
``tokenizer`` uses the model's own template (the stand-in's is ChatML).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
ChatFormat = Literal["tulu", "tokenizer"]

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
            raise ValueError(f"unknown chat role {role!r}; use one of {ROLES}")
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def render(messages: list[Message], tokenizer, fmt: ChatFormat = "tulu", add_generation_prompt: bool = True) -> str:
    """Conversation -> prompt text (without BOS: the tokenizer adds it when encoding)."""
    if fmt == "tulu":
        return render_tulu(messages, tokenizer.eos_token or "</s>", add_generation_prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat_format 'tokenizer' needs a tokenizer with a chat_template; use chat_format: tulu.")
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


def template_for(fmt: ChatFormat, tokenizer=None) -> str | None:
    """The Jinja template to ship for a format (None: keep the tokenizer's own)."""
    return TULU_TEMPLATE if fmt == "tulu" else getattr(tokenizer, "chat_template", None)


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


def stop_strings(fmt: ChatFormat) -> list[str]:
    """Text after which a generated answer is cut (the model starting the next turn)."""
    return ["<|user|>", "<|assistant|>"] if fmt == "tulu" else []
