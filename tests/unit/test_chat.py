"""The Tulu prompt format: Python and the shipped Jinja template agree, byte for byte, with open-instruct's layout."""

from __future__ import annotations

import json

import jinja2
import pytest

from tulu_quant.chat import TULU_TEMPLATE, install_template, render_tulu

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
    ],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Line one\nline two"}],
]


def jinja(messages, add_generation_prompt=True, eos="</s>"):
    return (
        jinja2.Environment()
        .from_string(TULU_TEMPLATE)
        .render(messages=messages, eos_token=eos, add_generation_prompt=add_generation_prompt)
    )


def test_open_instruct_layout():
    assert render_tulu(CONVERSATIONS[1]) == "<|user|>\nHi\n<|assistant|>\nHello!</s>\n<|user|>\n2+2?\n<|assistant|>\n"
    assert render_tulu(CONVERSATIONS[0], add_generation_prompt=False) == "<|user|>\nHi\n"


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("gen", [True, False])
def test_template_matches_python(messages, gen):
    assert jinja(messages, gen) == render_tulu(messages, add_generation_prompt=gen)


def test_unknown_role():
    with pytest.raises(ValueError, match="unknown chat role 'tool'"):
        render_tulu([{"role": "tool", "content": "x"}])


def test_install_template_through_transformers(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<s>", "</s>", "<unk>", "Hi"])}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tok.save_pretrained(tmp_path)
    install_template(tmp_path, "tulu")
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == TULU_TEMPLATE
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for messages in CONVERSATIONS:
        assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == render_tulu(messages)
