"""calibrate: N x L token samples drawn by seed from a weighted mix of text and chat sources (local files here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import run_config

from tulu_quant.config import CalibrateConfig, ConfigError, SourceWeight, build
from tulu_quant.stages import calibrate

VOCAB = 300


def build_tokenizer_dir(root: Path, bos: bool = False, max_positions: int = 256) -> Path:
    """A model folder with a byte-level BPE tokenizer (BOS prepended when `bos`) and a config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["Plain text about foxes and dogs. <|user|> asks, <|assistant|> answers."] * 50, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(root)
    (root / "config.json").write_text(json.dumps({"max_position_embeddings": max_positions, "vocab_size": VOCAB}))
    return root


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return build_tokenizer_dir(tmp_path / "model")


@pytest.fixture
def sources(tmp_path) -> dict[str, str]:
    text = tmp_path / "prose.txt"
    text.write_text(" ".join(f"Sentence {i} tells of a quick brown fox and a lazy dog." for i in range(400)))
    chat = tmp_path / "chats.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i} about foxes?"},
                {"role": "assistant", "content": f"Answer {i}: the fox is quick and brown."},
            ]
        }
        for i in range(200)
    ]
    chat.write_text("\n".join(json.dumps(r) for r in rows))
    return {"text": f"file:{text}", "chat": f"file:{chat}"}


def config(sources, **kw) -> CalibrateConfig:
    mix = [SourceWeight(source=sources["text"], weight=3), SourceWeight(source=sources["chat"], weight=1)]
    return CalibrateConfig(**{"mix": mix, "num_samples": 12, "seq_len": 32, "seed": 0, **kw})


def calibrate_run(model_dir, out, cfg, chat_format="tulu", evaluation=None, **kw):
    """calibrate.run with cfg as the calibrate: section (and evaluation pairs as calibrate.evaluation)."""
    if evaluation is not None:
        cfg = cfg.model_copy(update={"evaluation": [f"{source}:{split}" for source, split in evaluation]})
    return calibrate.run(run_config(calibrate=cfg, model__chat_format=chat_format), model_dir, out, **kw)


def samples(out: Path) -> torch.Tensor:
    return calibrate.load_samples(out)


# ------------------------------------------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    "total, weights, expected",
    [
        (128, [1.0], [128]),
        (12, [3, 1], [9, 3]),
        (10, [1, 1, 1], [4, 3, 3]),
        (7, [0.5, 0.25, 0.25], [3, 2, 2]),
    ],
)
def test_allocate_is_proportional_and_exact(total, weights, expected):
    assert calibrate.allocate(total, weights) == expected


def test_windows_are_non_overlapping_and_start_with_bos_when_the_tokenizer_does():
    ids = list(range(10, 30))
    assert calibrate.cut_windows(ids, 8, None) == [ids[0:8], ids[8:16]]
    assert calibrate.cut_windows(ids, 8, 1) == [[1, *ids[0:7]], [1, *ids[7:14]]]


def test_mix_sources_must_be_unique():
    with pytest.raises(ConfigError, match="appear once"):
        build(CalibrateConfig, {"mix": [{"source": "wiki"}, {"source": "wiki", "weight": 2}]}, "test")


# ------------------------------------------------------------------------------------------------------ the stage


def test_builds_n_by_l_int64_from_the_weighted_mix(model_dir, sources, tmp_path):
    out = tmp_path / "calib"
    result = calibrate_run(model_dir, out, config(sources), chat_format="tulu")
    ids = samples(out)
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (12, 32)
    assert result.counts == {f"{sources['text']}:calibration": 9, f"{sources['chat']}:calibration": 3}
    record = json.loads((out / calibrate.RECORD_FILE).read_text())
    assert record["seed"] == 0 and record["tokenizer_sha256"] == calibrate.tokenizer_sha256(model_dir)
    assert record["mix"][0]["weight"] == 3 and record["chat_format"] == "tulu"
    from transformers import AutoTokenizer

    text = [AutoTokenizer.from_pretrained(model_dir).decode(row) for row in ids.tolist()]
    chat_rows = [t for t in text if any(mark in t for mark in ("<|", "</s>", "Question", "Answer"))]
    assert len(chat_rows) == 3 and any("<|user|>" in t or "<|assistant|>" in t for t in chat_rows)
    # the chat source's conversations are rendered in the tulu format, answers included, no generation prompt
    documents = calibrate.source_documents(
        sources["chat"], "calibration", AutoTokenizer.from_pretrained(model_dir), "tulu"
    )
    assert (
        documents[0] == "<|user|>\nQuestion 0 about foxes?\n<|assistant|>\nAnswer 0: the fox is quick and brown.</s>\n"
    )


def test_deterministic_by_seed(model_dir, sources, tmp_path):
    first = samples(calibrate_run(model_dir, tmp_path / "a", config(sources)).out)
    again = samples(calibrate_run(model_dir, tmp_path / "b", config(sources)).out)
    other = samples(calibrate_run(model_dir, tmp_path / "c", config(sources, seed=1)).out)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_tokenizer_bos_is_kept_at_the_start_of_each_sample(tmp_path, sources):
    model = build_tokenizer_dir(tmp_path / "bos", bos=True)
    ids = samples(calibrate_run(model, tmp_path / "calib", config(sources)).out)
    assert (ids[:, 0] == 0).all() and (ids[:, 1:] != 0).all()


def test_reused_when_nothing_changed_and_refused_when_settings_differ(model_dir, sources, tmp_path):
    out = tmp_path / "calib"
    calibrate_run(model_dir, out, config(sources))
    stamp = (out / calibrate.SAMPLES_FILE).stat().st_mtime_ns
    again = calibrate_run(model_dir, out, config(sources))
    assert again.reused and (out / calibrate.SAMPLES_FILE).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="--force"):
        calibrate_run(model_dir, out, config(sources, seed=5))
    rebuilt = calibrate_run(model_dir, out, config(sources, seed=5), force=True)
    assert not rebuilt.reused and json.loads((out / calibrate.RECORD_FILE).read_text())["seed"] == 5
    (model_dir / "tokenizer_config.json").write_text((model_dir / "tokenizer_config.json").read_text() + "\n")
    with pytest.raises(FileExistsError):  # another tokenizer: not reused silently
        calibrate_run(model_dir, out, config(sources, seed=5))


def test_calibration_overlapping_evaluation_is_refused(model_dir, sources, tmp_path):
    with pytest.raises(ValueError, match="overlaps evaluation"):
        calibrate_run(model_dir, tmp_path / "calib", config(sources), evaluation=[(sources["chat"], "evaluation")])
    with pytest.raises(ValueError, match="overlaps evaluation"):
        cfg = CalibrateConfig(mix=[SourceWeight(source="wiki", split="evaluation")], num_samples=2, seq_len=8)
        calibrate_run(model_dir, tmp_path / "calib", cfg, evaluation=[("wiki", "evaluation")])
    assert not (tmp_path / "calib").exists()


def test_too_little_material_is_a_clear_error(model_dir, sources, tmp_path):
    with pytest.raises(calibrate.CalibrateError, match="windows of 32, but .* samples"):
        calibrate_run(model_dir, tmp_path / "calib", config(sources, num_samples=4000))
    with pytest.raises(calibrate.CalibrateError, match="max_position_embeddings"):
        calibrate_run(model_dir, tmp_path / "calib", config(sources, seq_len=1024))
    with pytest.raises(calibrate.CalibrateError, match="gets 0 of"):
        mix = [SourceWeight(source=sources["text"], weight=100), SourceWeight(source=sources["chat"], weight=1)]
        calibrate_run(model_dir, tmp_path / "calib", CalibrateConfig(mix=mix, num_samples=10, seq_len=32))


def test_a_default_seq_len_longer_than_the_context_is_clamped(model_dir, sources, tmp_path, caplog):
    cfg = config(sources)
    cfg = CalibrateConfig(mix=cfg.mix, num_samples=4)  # seq_len left at its default, 2048 > the model's 256
    with caplog.at_level("INFO", logger="tulu_quant.stages.calibrate"):
        result = calibrate_run(model_dir, tmp_path / "calib", cfg)
    assert result.seq_len == 256 and samples(result.out).shape == (4, 256)
    assert "using 256" in caplog.text


def test_tokenizer_hash_follows_the_tokenizer_files(model_dir):
    before = calibrate.tokenizer_sha256(model_dir)
    (model_dir / "tokenizer.json").write_text((model_dir / "tokenizer.json").read_text().replace("fox", "cat"))
    assert calibrate.tokenizer_sha256(model_dir) != before


def test_pipeline_evaluation_pairs_come_from_the_validate_suite():
    from tulu_quant.config import RunConfig, load_suite

    cfg = RunConfig(model={"name": "t", "base": "/b", "diff": "/d"}, run_dir="/r")
    perplexity = load_suite(cfg.validate_.suite).perplexity
    assert calibrate.evaluation_pairs(cfg) == [(s, perplexity.split) for s in perplexity.sources]
    explicit = run_config(calibrate={"evaluation": ["file:/x.jsonl:evaluation"]})
    assert calibrate.evaluation_pairs(explicit) == [("file:/x.jsonl", "evaluation")]
