"""recover: bitwise equality with open-instruct's in-memory algorithm, and every bad input's error."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open
from tiny import run_config, tiny_llama_config, tiny_state, write_checkpoint

from tulu_quant.checkpoint import open_checkpoint
from tulu_quant.config import RecoverConfig
from tulu_quant.stages import recover
from tulu_quant.stages.recover import RecoverError


def open_instruct_recover(base_state: dict, diff_state: dict) -> dict:
    """open-instruct scripts/weight_diff.py recover, in memory: float32, mean-initialised new rows,
    tuned = base + diff."""
    base = {k: v.float().clone() for k, v in base_state.items()}
    diff = {k: v.float() for k, v in diff_state.items()}
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in base and diff[key].shape[0] > base[key].shape[0]:
            n_new = diff[key].shape[0] - base[key].shape[0]
            resized = torch.cat([base[key], torch.zeros(n_new, base[key].shape[1])])
            resized[-n_new:] = resized[:-n_new].mean(dim=0, keepdim=True)
            base[key] = resized
    for key in base:
        base[key].add_(diff[key])
    return base


def make_pair(
    tmp_path,
    *,
    tie=False,
    base_fmt="safetensors",
    diff_fmt="safetensors",
    base_shards=1,
    diff_shards=1,
    base_dtype=torch.float16,
    diff_dtype=torch.float32,
    added=1,
    diff_scale=0.01,
):
    base_cfg = tiny_llama_config(vocab_size=96, tie=tie)
    diff_cfg = tiny_llama_config(vocab_size=96 + added, tie=tie)
    base_state = tiny_state(base_cfg, base_dtype, seed=1)
    diff_state = {k: v * diff_scale for k, v in tiny_state(diff_cfg, torch.float32, seed=2).items()}
    diff_state = {k: v.to(diff_dtype) for k, v in diff_state.items()}
    base = write_checkpoint(tmp_path / "base", base_state, base_cfg, base_fmt, base_shards)
    diff = write_checkpoint(tmp_path / "diff", diff_state, diff_cfg, diff_fmt, diff_shards)
    (diff / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    return base, diff, base_state, diff_state


def load_dir(path) -> dict:
    ckpt = open_checkpoint(path)
    with ckpt.reader() as get:
        return {name: get(name).clone() for name in ckpt.tensors}


CASES = [
    dict(),
    dict(tie=True),
    dict(base_fmt="bin", diff_fmt="bin"),
    dict(base_fmt="bin", diff_fmt="safetensors", diff_shards=3),
    dict(base_fmt="safetensors", base_shards=2, diff_fmt="bin", diff_shards=2),
    dict(base_dtype=torch.float32, diff_dtype=torch.float16),
    dict(base_dtype=torch.bfloat16, diff_dtype=torch.bfloat16),
    dict(added=3),
    dict(added=0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_float32_output_is_bitwise_open_instruct(tmp_path, case):
    base, diff, base_state, diff_state = make_pair(tmp_path, **case)
    cfg = RecoverConfig(dtype="float32", max_shard_size="20KB")
    result = recover_run(base, diff, tmp_path / "out", cfg)
    expected = open_instruct_recover(base_state, diff_state)
    got = load_dir(tmp_path / "out")
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == torch.float32
        assert torch.equal(got[key], expected[key]), key
    assert result.added_rows == (
        {}
        if case.get("added") == 0
        else {k: case.get("added", 1) for k in expected if k.endswith(("embed_tokens.weight", "lm_head.weight"))}
    )
    assert len(result.shards) > 1  # 20KB shards: the output is sharded with an index
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(expected)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_output_is_float32_result_rounded_once(tmp_path, dtype):
    base, diff, base_state, diff_state = make_pair(tmp_path, added=2)
    recover_run(base, diff, tmp_path / "out", RecoverConfig(dtype=dtype))
    expected = open_instruct_recover(base_state, diff_state)
    got = load_dir(tmp_path / "out")
    for key in expected:
        assert torch.equal(got[key], expected[key].to(getattr(torch, dtype))), key


def test_output_is_a_complete_model_directory(tmp_path):
    base, diff, *_ = make_pair(tmp_path, added=1)
    result = recover_run(base, diff, tmp_path / "out", RecoverConfig(dtype="float16"))
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 97 and config["dtype"] == "float16"
    assert json.loads((out / "tokenizer_config.json").read_text())["pad_token"] == "<pad>"
    record = json.loads((out / "recovery.json").read_text())
    assert record["shards"] == result.shards and record["seconds"] > 0 and record["peak_rss"] > 0
    with safe_open(out / "model.safetensors", "pt") as f:  # the file is valid for the reference reader too
        assert set(f.keys()) == set(load_dir(out))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == 97
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary directory left


def test_a_diff_without_a_vocabulary_takes_the_base_tokenizer_it_lacks(tmp_path):
    base, diff, *_ = make_pair(tmp_path)  # the diff has tokenizer_config.json only, which cannot tokenize
    (base / "tokenizer.model").write_bytes(b"the base's sentencepiece model")
    (base / "tokenizer_config.json").write_text(json.dumps({"pad_token": None}))
    out = tmp_path / "out"
    recover_run(base, diff, out, RecoverConfig())
    assert (out / "tokenizer.model").read_bytes() == b"the base's sentencepiece model"
    assert json.loads((out / "tokenizer_config.json").read_text())["pad_token"] == "<pad>"  # the diff's wins


def test_rotary_buffers_of_old_conversions_are_dropped(tmp_path):
    base, diff, base_state, diff_state = make_pair(tmp_path, base_fmt="bin")
    base_state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    write_checkpoint(base, base_state, None, "bin")
    recover_run(base, diff, tmp_path / "out", RecoverConfig())
    assert not any("inv_freq" in k for k in load_dir(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------------- bad input


def recover_run(base, diff, out, cfg=None, **kw):
    """recover.run with the pair as model.base/model.diff and cfg as the recover: section."""
    return recover.run(run_config(model={"base": base, "diff": diff}, recover=cfg or RecoverConfig()), out, **kw)


def expect_error(tmp_path, base, diff, match, cfg=None, exc=RecoverError):
    with pytest.raises(exc, match=match):
        recover_run(base, diff, tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_keys_on_one_side_are_listed(tmp_path):
    base, diff, base_state, _ = make_pair(tmp_path)
    del base_state["model.layers.1.mlp.up_proj.weight"]
    write_checkpoint(base, base_state, None)
    expect_error(tmp_path, base, diff, r"only in diff model\.layers\.1\.mlp\.up_proj\.weight")
    result = recover_run(base, diff, tmp_path / "out", RecoverConfig(skip_checks=["keys"]))
    assert "model.layers.1.mlp.up_proj.weight" not in load_dir(result.out)


def test_shape_mismatch_beyond_vocabulary(tmp_path):
    base, diff, _, diff_state = make_pair(tmp_path)
    diff_state["model.layers.0.mlp.down_proj.weight"] = torch.zeros(32, 63)
    write_checkpoint(diff, diff_state, None)
    expect_error(tmp_path, base, diff, r"shapes differ beyond added vocabulary rows \(model\.layers\.0\.mlp\.down_proj")


def test_diff_with_smaller_vocabulary_says_swapped(tmp_path):
    base, diff, *_ = make_pair(tmp_path, added=2)
    expect_error(tmp_path, diff, base, r"smaller vocabulary than the base.*swapped")


def test_full_model_as_diff_is_refused(tmp_path):
    base, _, base_state, _ = make_pair(tmp_path, added=0)
    full = write_checkpoint(
        tmp_path / "full",
        {k: v.float() for k, v in tiny_state(tiny_llama_config(), seed=7).items()},
        tiny_llama_config(),
    )
    expect_error(tmp_path, base, full, r"as large as the weights \(median \|\|diff\|\|/\|\|base\|\| = ")
    recover_run(base, full, tmp_path / "out", RecoverConfig(skip_checks=["diff-scale"]))


def test_wrong_base_config_names_fields(tmp_path):
    base, diff, *_ = make_pair(tmp_path)
    llama2 = tiny_llama_config(vocab_size=96, rms_norm_eps=1e-5, max_position_embeddings=4096)
    (base / "config.json").write_text(json.dumps(llama2))
    expect_error(tmp_path, base, diff, r"rms_norm_eps \(base 1e-05, diff 1e-06\), max_position_embeddings \(base 4096")
    recover_run(base, diff, tmp_path / "out", RecoverConfig(skip_checks=["config"]))


def test_nonfinite_result(tmp_path):
    base, diff, base_state, diff_state = make_pair(tmp_path)
    base_state["model.norm.weight"][0] = 60000.0  # fp16 max is 65504: 60000 + 60000 overflows when cast
    diff_state["model.norm.weight"][0] = 60000.0
    write_checkpoint(base, base_state, None)
    write_checkpoint(diff, diff_state, None)
    expect_error(
        tmp_path,
        base,
        diff,
        r"model\.norm\.weight has NaN or Inf after recovery in float16",
        RecoverConfig(skip_checks=["diff-scale"]),
    )
    recover_run(base, diff, tmp_path / "out", RecoverConfig(dtype="float32", skip_checks=["diff-scale"]))


def test_truncated_shard_is_named(tmp_path):
    base, diff, *_ = make_pair(tmp_path, diff_shards=2)
    shard = diff / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    expect_error(tmp_path, base, diff, r"model-00002-of-00002\.safetensors: truncated")


def test_garbage_shard_is_named(tmp_path):
    base, diff, *_ = make_pair(tmp_path, diff_fmt="bin")
    (diff / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    expect_error(tmp_path, base, diff, r"pytorch_model\.bin: unreadable PyTorch checkpoint")
    (base / "model.safetensors").write_bytes(struct.pack("<Q", 10**12))
    expect_error(tmp_path, base, diff, r"model\.safetensors: truncated safetensors file")


def test_index_naming_missing_shard(tmp_path):
    base, diff, *_ = make_pair(tmp_path, diff_shards=3)
    (diff / "model-00003-of-00003.safetensors").unlink()
    expect_error(tmp_path, base, diff, r"names shard model-00003-of-00003\.safetensors, which is missing")


def test_existing_output_needs_force(tmp_path):
    base, diff, *_ = make_pair(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--force"):
        recover_run(base, diff, tmp_path / "out", RecoverConfig())
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    recover_run(base, diff, tmp_path / "out", RecoverConfig(), force=True)
    assert not (tmp_path / "out" / "mine.txt").exists()
