"""Checkpoint I/O (tulu_quant/checkpoint.py): streaming safetensors written header-first and read back exactly,
sharding, every format users have, truncated and inconsistent files, and outputs that never look half-written."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_llama_config, tiny_state, write_checkpoint

from tulu_quant import checkpoint as ckpt
from tulu_quant.checkpoint import CheckpointError


def entries(state: dict) -> list[tuple]:
    return [(name, t.dtype, tuple(t.shape)) for name, t in state.items()]


def test_writer_output_is_a_standard_safetensors_file_with_its_sha256(tmp_path):
    state = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64), "c": torch.randn(4).to(torch.bfloat16)}
    writer = ckpt.SafetensorsWriter(tmp_path / "x.safetensors", entries(state), metadata={"note": "hi"})
    for name, tensor in state.items():
        writer.write(name, tensor)
    digest = writer.close()
    assert digest == ckpt.sha256_file(tmp_path / "x.safetensors")
    loaded = load_file(tmp_path / "x.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    header = ckpt.read_safetensors_header(tmp_path / "x.safetensors")
    assert {k: (i.dtype, i.shape) for k, i in header.items()} == {
        k: (v.dtype, tuple(v.shape)) for k, v in state.items()
    }
    assert all(torch.equal(ckpt.read_tensor(header[k]), v) for k, v in state.items())


def test_writer_refuses_tensors_out_of_its_header_and_missing_ones(tmp_path):
    writer = ckpt.SafetensorsWriter(
        tmp_path / "x.safetensors", [("a", torch.float32, (2,)), ("b", torch.float32, (2,))]
    )
    with pytest.raises(AssertionError, match="expected a"):
        writer.write("b", torch.zeros(2))
    writer.write("a", torch.zeros(2))
    with pytest.raises(AssertionError, match="1 tensors were never written"):
        writer.close()


def test_shards_respect_the_size_limit_and_a_larger_tensor_stands_alone():
    f32 = torch.float32
    plan = ckpt.plan_shards([("a", f32, (10,)), ("b", f32, (10,)), ("c", f32, (100,)), ("d", f32, (5,))], 80)
    assert [[name for name, *_ in shard] for shard in plan] == [["a", "b"], ["c"], ["d"]]
    assert ckpt.shard_names(1) == ["model.safetensors"]
    assert ckpt.shard_names(3)[1] == "model-00002-of-00003.safetensors"


@pytest.mark.parametrize("fmt, shards", [("safetensors", 1), ("safetensors", 3), ("bin", 1), ("bin", 2)])
def test_open_checkpoint_reads_every_format_users_have(tmp_path, fmt, shards):
    config = tiny_llama_config()
    state = tiny_state(config)
    root = write_checkpoint(tmp_path / "m", state, config, fmt=fmt, shards=shards)
    opened = ckpt.open_checkpoint(root)
    assert opened.format == ("safetensors" if fmt == "safetensors" else "bin") and set(opened.tensors) == set(state)
    with opened.reader() as get:
        assert all(torch.equal(get(name), tensor) for name, tensor in state.items())


def test_truncated_files_missing_shards_and_empty_folders_are_clear_errors(tmp_path):
    config = tiny_llama_config()
    root = write_checkpoint(tmp_path / "m", tiny_state(config), config, shards=2)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    first = root / sorted(set(index["weight_map"].values()))[0]
    first.write_bytes(first.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.open_checkpoint(root)
    (root / sorted(set(index["weight_map"].values()))[1]).unlink()
    with pytest.raises(CheckpointError, match="which is missing; download it"):
        ckpt.open_checkpoint(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        ckpt.open_checkpoint(tmp_path / "empty")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(CheckpointError):
        ckpt.read_safetensors_header(bad)


def test_atomic_dir_appears_only_when_finished_and_replaces_only_with_force(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with ckpt.atomic_dir(out) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with ckpt.atomic_dir(out) as tmp:
        (tmp / "done").write_text("1")
    assert (out / "done").read_text() == "1"
    with pytest.raises(FileExistsError, match="pass --force"):
        with ckpt.atomic_dir(out):
            pass
    with ckpt.atomic_dir(out, force=True) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["new"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_copy_if_present_and_sizes(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text("{}")
    (tmp_path / "dst").mkdir()
    assert ckpt.copy_if_present(tmp_path / "src", tmp_path / "dst", ["tokenizer.json", "missing.json"]) == [
        "tokenizer.json"
    ]
    assert ckpt.dir_size(tmp_path / "dst") == 2
