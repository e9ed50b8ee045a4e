"""The stand-in's pure helpers and pair derivation, on tiny random LLaMA models (no GGUF is fetched here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import run_config

from tulu_quant.checkpoint import open_checkpoint
from tulu_quant.config import RecoverConfig, StandinConfig
from tulu_quant.stages import recover
from tulu_quant.stages.standin import derive_pair, derive_tensor, diff_scales, make_delta, split_even, tensor_seed

VOCAB = 300


def make_tuned(root: Path, tied: bool, vocab: int = VOCAB, tokens: int = VOCAB) -> Path:
    """A tiny random LLaMA in fp16 with a word-level tokenizer of `tokens` entries."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(1)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        tie_word_embeddings=tied,
    )
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(root)
    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, tokens)}}
    backend = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(root)
    return root


def tensors(root: Path) -> dict[str, torch.Tensor]:
    ckpt = open_checkpoint(root)
    with ckpt.reader() as get:
        return {name: get(name).clone() for name in ckpt.tensors}


# ------------------------------------------------------------------------------------------------------ delta


def test_delta_is_deterministic_per_name_and_seed():
    w = torch.randn(32, 16).half()
    a, b = make_delta("layers.0.q.weight", w, 0.01, seed=0), make_delta("layers.0.q.weight", w, 0.01, seed=0)
    assert torch.equal(a, b)
    assert not torch.equal(a, make_delta("layers.1.q.weight", w, 0.01, seed=0))
    assert not torch.equal(a, make_delta("layers.0.q.weight", w, 0.01, seed=1))
    assert tensor_seed(0, "x") == tensor_seed(0, "x") != tensor_seed(0, "y")


@pytest.mark.parametrize("scale", [0.01, 0.003, 0.2])
@pytest.mark.parametrize("shape", [(48, 24), (64,)])
def test_delta_has_the_requested_relative_norm(scale, shape):
    w = (torch.randn(shape) * 0.05).half()
    delta = make_delta("k", w, scale, seed=3)
    assert delta.dtype == torch.float32 and delta.shape == w.shape
    assert float(delta.norm() / w.float().norm()) == pytest.approx(scale, rel=1e-5)


def test_derive_tensor_vocab_rows_and_exact_reconstruction():
    cfg = StandinConfig(delta_scale=0.01, seed=0)
    tuned = (torch.randn(VOCAB, 64) * 0.02).half()
    base, diff = derive_tensor("model.embed_tokens.weight", tuned, VOCAB, 2, cfg)
    assert base.dtype == torch.float16 and base.shape == (VOCAB, 64)
    assert diff.dtype == torch.float32 and diff.shape == (VOCAB + 2, 64)
    assert float(diff[:VOCAB].norm() / base.float().norm()) == pytest.approx(0.01, rel=0.02)
    # recovery of the original rows: fp16(base + diff) is the tuned tensor, bit for bit
    assert torch.equal((base.float() + diff[:VOCAB]).half(), tuned)
    # the added rows: recovery puts the mean of the base rows there; the tuned model holds that mean in fp16
    mean = base.float().mean(dim=0)
    assert torch.equal((mean + diff[VOCAB]).half(), mean.half())
    assert torch.equal((mean + diff[VOCAB + 1]).half(), mean.half())
    other_base, other_diff = derive_tensor("model.layers.0.mlp.up_proj.weight", tuned[:128], VOCAB, 2, cfg)
    assert other_diff.shape == other_base.shape == (128, 64)


# ------------------------------------------------------------------------------------------------------ shards


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_split_even_gives_n_contiguous_balanced_shards(n):
    sizes = [50, 10, 10, 200, 10, 30, 30, 30, 10, 5, 90]
    entries = [(f"t{i}", torch.float32, (s,)) for i, s in enumerate(sizes)]
    shards = split_even(entries, n)
    assert len(shards) == n and all(shards)
    assert [e for shard in shards for e in shard] == entries
    total = sum(sizes) * 4
    assert max(sum(4 * e[2][0] for e in shard) for shard in shards) <= total / n + 4 * max(sizes)


def test_split_even_rejects_more_shards_than_tensors():
    with pytest.raises(ValueError, match="diff_shards"):
        split_even([("a", torch.float32, (4,))], 2)


# ------------------------------------------------------------------------------------------------------ the pair


@pytest.mark.parametrize("tied", [True, False])
def test_derive_pair_layout_and_recovery(tmp_path, tied):
    tuned_dir = make_tuned(tmp_path / "tuned", tied)
    cfg = StandinConfig(delta_scale=0.01, seed=0, diff_shards=3)
    count, vocab, median = derive_pair(tuned_dir, tmp_path / "base", tmp_path / "diff", cfg)
    tuned, base, diff = tensors(tuned_dir), tensors(tmp_path / "base"), tensors(tmp_path / "diff")
    vocab_keys = {"model.embed_tokens.weight"} | (set() if tied else {"lm_head.weight"})
    assert vocab == VOCAB and count == len(tuned) and set(base) == set(diff) == set(tuned)
    assert ("lm_head.weight" in tuned) is (not tied)
    for name, t in tuned.items():
        assert base[name].dtype == torch.float16 and base[name].shape == t.shape
        rows = (VOCAB + 1,) if name in vocab_keys else t.shape[:1]
        assert diff[name].dtype == torch.float32 and diff[name].shape == (*rows, *t.shape[1:])
    assert median == pytest.approx(0.01, rel=0.02)
    assert statistics_median(diff_scales(tmp_path / "base", tmp_path / "diff")) == pytest.approx(median, rel=1e-4)

    # sharding: three files, and the index maps every tensor to the file that holds it
    index = json.loads((tmp_path / "diff" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    held = {name: info.file.name for name, info in open_checkpoint(tmp_path / "diff").tensors.items()}
    assert index["weight_map"] == held
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in diff.values())
    assert not (tmp_path / "base" / "model.safetensors.index.json").exists()

    # configs and tokenizers: base keeps the vocabulary, diff has <pad> at id V
    from transformers import AutoTokenizer

    base_cfg = json.loads((tmp_path / "base" / "config.json").read_text())
    diff_cfg = json.loads((tmp_path / "diff" / "config.json").read_text())
    assert base_cfg["vocab_size"] == VOCAB and diff_cfg["vocab_size"] == VOCAB + 1 and diff_cfg["pad_token_id"] == VOCAB
    diff_tok, base_tok = (
        AutoTokenizer.from_pretrained(tmp_path / "diff"),
        AutoTokenizer.from_pretrained(tmp_path / "base"),
    )
    assert len(base_tok) == VOCAB and len(diff_tok) == VOCAB + 1
    assert diff_tok.pad_token == "<pad>" and diff_tok.pad_token_id == VOCAB
    assert "stand-in" in json.loads((tmp_path / "diff" / "standin.json").read_text())["notice"].lower()

    # recover(base, diff) gives back the tuned weights, bit for bit, with <pad> = fp16(mean of the base rows)
    cfg = run_config(
        model={"base": tmp_path / "base", "diff": tmp_path / "diff"}, recover=RecoverConfig(dtype="float16")
    )
    recover.run(cfg, tmp_path / "rec")
    rec = tensors(tmp_path / "rec")
    for name, t in tuned.items():
        if name in vocab_keys:
            assert torch.equal(rec[name][:VOCAB], t)
            assert torch.equal(rec[name][VOCAB], base[name].float().mean(dim=0).half())
        else:
            assert torch.equal(rec[name], t), name


def statistics_median(ratios: dict[str, float]) -> float:
    import statistics

    return statistics.median(ratios.values())


def test_derive_pair_is_deterministic_and_seeded(tmp_path):
    tuned_dir = make_tuned(tmp_path / "tuned", tied=True)
    cfg = StandinConfig(diff_shards=2, added_tokens=["<pad>", "<extra>"])
    derive_pair(tuned_dir, tmp_path / "b1", tmp_path / "d1", cfg)
    derive_pair(tuned_dir, tmp_path / "b2", tmp_path / "d2", cfg)
    derive_pair(tuned_dir, tmp_path / "b3", tmp_path / "d3", StandinConfig(diff_shards=2, seed=5))
    for name in ("model.safetensors",):
        assert (tmp_path / "b1" / name).read_bytes() == (tmp_path / "b2" / name).read_bytes()
        assert (tmp_path / "b1" / name).read_bytes() != (tmp_path / "b3" / name).read_bytes()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        assert (tmp_path / "d1" / name).read_bytes() == (tmp_path / "d2" / name).read_bytes()
    assert tensors(tmp_path / "d1")["model.embed_tokens.weight"].shape[0] == VOCAB + 2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "d1")
    assert tok.pad_token_id == VOCAB and tok.convert_tokens_to_ids("<extra>") == VOCAB + 1


def test_derive_pair_refuses_existing_output_and_leaves_nothing_on_error(tmp_path):
    tuned_dir = make_tuned(tmp_path / "tuned", tied=True)
    (tmp_path / "base").mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        derive_pair(tuned_dir, tmp_path / "base", tmp_path / "diff", StandinConfig())
    assert not (tmp_path / "diff").exists()
    derive_pair(tuned_dir, tmp_path / "base", tmp_path / "diff", StandinConfig(), force=True)
    assert (tmp_path / "base" / "model.safetensors").is_file()

    too_many = StandinConfig(diff_shards=10_000)
    with pytest.raises(ValueError, match="diff_shards"):
        derive_pair(tuned_dir, tmp_path / "b2", tmp_path / "d2", too_many)
    assert not (tmp_path / "b2").exists() and not (tmp_path / "d2").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_derive_pair_rejects_a_tokenizer_smaller_than_the_vocabulary(tmp_path):
    tuned_dir = make_tuned(tmp_path / "tuned", tied=True, vocab=320, tokens=300)
    with pytest.raises(ValueError, match="tokenizer has 300 tokens"):
        derive_pair(tuned_dir, tmp_path / "base", tmp_path / "diff", StandinConfig())
    assert not (tmp_path / "base").exists() and not (tmp_path / "diff").exists()
