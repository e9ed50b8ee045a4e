"""Prompt conventions: the Tulu format (Python and the shipped Jinja template agree, byte for byte, with
open-instruct's layout), format resolution, stop ids and cutting a streamed answer at a stop string."""

from __future__ import annotations

import json

import jinja2
import pytest

from tulu_quant.chat import (
    TULU_TEMPLATE,
    TextStream,
    cut_at_stops,
    install_template,
    render_tulu,
    resolve_format,
    stop_token_ids,
)

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


class CharTokenizer:
    """One character per token id (ord), enough to drive TextStream."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def test_text_stream_holds_back_stop_prefixes_and_cuts_at_a_stop_string():
    pieces = []
    stream = TextStream(CharTokenizer(), ["<|user|>"], pieces.append)
    stopped = [stream.add(ord(c)) for c in "Hi <|us"]
    assert not any(stopped) and "".join(pieces) == "Hi "  # "<|us" could become the stop string: held back
    assert [stream.add(ord(c)) for c in "er|>"] == [False, False, False, True]
    assert stream.finish() == "Hi " == "".join(pieces)
    stream = TextStream(CharTokenizer(), ["<|user|>"], pieces.append)
    for c in "a<b":
        stream.add(ord(c))
    assert stream.finish() == "a<b"  # a held-back prefix that never became a stop string is written at the end
    assert cut_at_stops("x<|assistant|>y<|user|>", ["<|user|>", "<|assistant|>"]) == "x"


def test_auto_format_is_tulu_for_our_template_or_none_and_tokenizer_for_another():
    class Tok:
        def __init__(self, template):
            self.chat_template = template

    assert resolve_format("auto", Tok(None)) == "tulu"
    assert resolve_format("auto", Tok(TULU_TEMPLATE)) == "tulu"  # every folder we write for the tulu format
    assert resolve_format("auto", Tok("{{ chatml }}")) == "tokenizer"
    assert resolve_format("none", Tok(TULU_TEMPLATE)) == "none"
    with pytest.raises(ValueError, match="not one of"):
        resolve_format("chatml", Tok(None))


def test_stop_token_ids_join_the_tokenizer_and_the_folder(tmp_path):
    class Tok:
        eos_token_id = 2

    assert stop_token_ids(Tok()) == (2,)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert stop_token_ids(Tok(), tmp_path) == (2, 7)
