"""Build the GPTQ calibration set: N samples of L tokens drawn deterministically from a weighted mix of data sources.

    for each source s of the mix (weight w_s):
        documents_s  = s.documents(split)                      # text sources
                     | render(c, chat_format) for c in s.conversations(split)   # chat sources, with the answers
        stream_s     = tokenize("\\n\\n".join(documents_s))      # no special tokens
        windows_s    = non-overlapping slices of L tokens (L-1 after BOS when the tokenizer starts with BOS)
        n_s          = round(N * w_s / sum w)                  # largest remainder, so sum n_s = N
        samples     += n_s windows drawn without replacement by Random(f"{seed}:{s}:{split}")
    input_ids [N, L] int64, shuffled by the seed

Output ``calib/``: ``calibration.safetensors`` (input_ids) and ``calibration.json`` (the mix, samples per source, the
sha256 of the tokenizer files, the seed). A folder made from the same config, chat format and tokenizer is reused.
The calibration splits must be disjoint from the evaluation splits (``tulu_quant.data.check_disjoint``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import TOKENIZER_FILES, VOCABULARY_FILES, atomic_dir, has_vocabulary
from ..config import CalibrateConfig, RunConfig, config_hash
from ..errors import MissingPath, PathExists, UserValueError
from ..progress import NULL, Progress, human_seconds, measure
from .base import Context, Stage, Step

log = logging.getLogger(__name__)

STAGE = Stage("calibrate", output="calib", sweep="shared")

SAMPLES_FILE = "calibration.safetensors"
RECORD_FILE = "calibration.json"
DOCUMENT_SEPARATOR = "\n\n"


class CalibrateError(UserValueError):
    """A calibration set that cannot be built as configured: one sentence naming the key/source and what to do."""


@dataclass
class CalibrateResult:
    out: Path
    num_samples: int
    seq_len: int
    counts: dict[str, int]  # "source:split" -> samples drawn from it
    tokenizer_sha256: str
    reused: bool
    seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        mix = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        verb = "reused" if self.reused else f"built in {human_seconds(self.seconds)}"
        return f"calibration set {self.num_samples} x {self.seq_len} tokens ({mix}) {verb}: {self.out}"


# ------------------------------------------------------------------------------------------------------ pure helpers


def allocate(total: int, weights: list[float]) -> list[int]:
    """Split `total` samples in proportion to weights (largest remainder: the counts sum to total exactly)."""
    mass = sum(weights)
    exact = [total * w / mass for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def cut_windows(ids: list[int], seq_len: int, bos_id: int | None) -> list[list[int]]:
    """Non-overlapping windows of seq_len model inputs ([BOS] + seq_len-1 tokens when bos_id is given)."""
    text_len = seq_len - 1 if bos_id is not None else seq_len
    prefix = [bos_id] if bos_id is not None else []
    return [prefix + ids[i : i + text_len] for i in range(0, len(ids) - text_len + 1, text_len)]


def draw(windows: list[list[int]], count: int, seed: str) -> list[list[int]]:
    """`count` windows without replacement, in stream order, chosen by a string-seeded RNG (stable across runs)."""
    picks = sorted(random.Random(seed).sample(range(len(windows)), count))
    return [windows[i] for i in picks]


def tokenizer_sha256(model_dir: Path) -> str:
    """sha256 over the tokenizer files present in model_dir (name and content, in a fixed order)."""
    digest = hashlib.sha256()
    found = [name for name in sorted(TOKENIZER_FILES) if (Path(model_dir) / name).is_file()]
    if not has_vocabulary(model_dir):
        raise CalibrateError(
            f"{model_dir}: no tokenizer vocabulary (one of {', '.join(VOCABULARY_FILES)}); pass a model "
            "directory that holds its tokenizer."
        )
    for name in found:
        digest.update(name.encode() + b"\0" + (Path(model_dir) / name).read_bytes() + b"\0")
    return digest.hexdigest()


def bos_prefix(tokenizer) -> int | None:
    """The BOS id when the tokenizer starts encoded text with it (LLaMA does, SmolLM2 does not)."""
    bos = tokenizer.bos_token_id
    probe = tokenizer("a").input_ids if bos is not None else []
    return bos if probe and probe[0] == bos else None


def max_positions(model_dir: Path) -> int | None:
    path = Path(model_dir) / "config.json"
    return json.loads(path.read_text()).get("max_position_embeddings") if path.is_file() else None


def reuse_key(cfg: CalibrateConfig, chat_format: str, tokenizer_hash: str) -> str:
    """What decides the samples: the settings (not the evaluation material they must avoid), format and tokenizer."""
    settings = cfg.model_dump(mode="json", exclude={"evaluation"})
    return config_hash(settings, {"chat_format": chat_format, "tokenizer_sha256": tokenizer_hash})


def fit_seq_len(cfg: CalibrateConfig, positions: int | None, model_dir: Path) -> CalibrateConfig:
    """seq_len left at its default is clamped to a shorter model context (and said so); set explicitly, a value
    beyond the context is an error."""
    if positions is None or cfg.seq_len <= positions:
        return cfg
    if "seq_len" in cfg.model_fields_set:
        raise CalibrateError(
            f"calibrate.seq_len = {cfg.seq_len} exceeds the model's max_position_embeddings "
            f"({positions}, {model_dir / 'config.json'}); lower seq_len."
        )
    log.info("calibrate: seq_len %d (the default) is longer than the model's context; using %d", cfg.seq_len, positions)
    return cfg.model_copy(update={"seq_len": positions})


# ------------------------------------------------------------------------------------------------------ sources


def source_documents(name: str, split: str, tokenizer, chat_format: str) -> list[str]:
    """A source's split as plain text documents; chat conversations rendered with the answers (no generation prompt)."""
    from ..chat import render
    from ..data import get_source

    source = get_source(name)
    if source.kind == "chat":
        return [
            render(conv, tokenizer, chat_format, add_generation_prompt=False) for conv in source.conversations(split)
        ]
    return source.documents(split)


def source_samples(
    name: str, split: str, count: int, cfg: CalibrateConfig, tokenizer, chat_format: str, bos_id: int | None
) -> list[list[int]]:
    documents = source_documents(name, split, tokenizer, chat_format)
    ids = tokenizer(DOCUMENT_SEPARATOR.join(documents), add_special_tokens=False).input_ids
    windows = cut_windows(ids, cfg.seq_len, bos_id)
    if len(windows) < count:
        raise CalibrateError(
            f"calibrate.mix: source '{name}' split '{split}' holds {len(ids)} tokens, {len(windows)} "
            f"windows of {cfg.seq_len}, but {count} samples are drawn from it; lower num_samples or "
            "seq_len, lower its weight, or add sources."
        )
    return draw(windows, count, f"{cfg.seed}:{name}:{split}")


# ------------------------------------------------------------------------------------------------------ the stage


def run(cfg: RunConfig, model_dir: Path, out: Path, force: bool = False, progress: Progress = NULL) -> CalibrateResult:
    """Build (or reuse) out/calibration.safetensors from model_dir's tokenizer, as cfg.calibrate says, chat sources
    rendered in cfg.model.chat_format. Refuses sources that overlap the evaluation material (evaluation_pairs)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from ..chat import resolve_format
    from ..data import check_disjoint

    model_dir, out = Path(model_dir), Path(out)
    evaluation = evaluation_pairs(cfg)
    check_disjoint(cfg.calibrate.splits, evaluation)
    settings = fit_seq_len(cfg.calibrate, max_positions(model_dir), model_dir)
    tok_hash = tokenizer_sha256(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat_format = resolve_format(cfg.model.chat_format, tokenizer)
    key = reuse_key(settings, chat_format, tok_hash)
    existing = _load_record(out)
    if existing is None and out.exists() and not force:  # not a calibration folder: the user's files stay
        raise PathExists(f"{out} exists and is not a calibration folder; choose another --out or pass --force.")
    if existing is not None and not force:
        if existing.get("key") == key and (out / SAMPLES_FILE).is_file():
            log.info("calibrate: %s matches this config and tokenizer; reusing it", out)
            return _result(out, existing, reused=True)
        raise PathExists(
            f"{out} holds a calibration set made with other settings or another tokenizer; choose "
            "another --out or pass --force to rebuild it."
        )

    counts = allocate(settings.num_samples, [s.weight for s in settings.mix])
    for spec, count in zip(settings.mix, counts):
        if count == 0:
            raise CalibrateError(
                f"calibrate.mix: source '{spec.source}' gets 0 of {settings.num_samples} samples at weight "
                f"{spec.weight}; raise its weight or num_samples, or remove it."
            )
    with measure() as usage:
        bos_id = bos_prefix(tokenizer)
        samples: list[list[int]] = []
        with progress.task("calibrate", total=len(settings.mix), unit="source") as advance:
            for spec, count in zip(settings.mix, counts):
                samples += source_samples(spec.source, spec.split, count, settings, tokenizer, chat_format, bos_id)
                advance(1, source=spec.source)
        random.Random(settings.seed).shuffle(samples)
        record = {
            "key": key,
            "num_samples": settings.num_samples,
            "seq_len": settings.seq_len,
            "seed": settings.seed,
            "chat_format": chat_format,
            "bos": bos_id is not None,
            "tokenizer_sha256": tok_hash,
            "mix": [s.model_dump(mode="json") for s in settings.mix],
            "counts": {f"{s.source}:{s.split}": n for s, n in zip(settings.mix, counts)},
            "evaluation": [list(p) for p in evaluation],
            "model": str(model_dir.resolve()),
        }
        with atomic_dir(out, force=True) as tmp:
            save_file(
                {"input_ids": torch.tensor(samples, dtype=torch.int64)},
                tmp / SAMPLES_FILE,
                metadata={"seq_len": str(settings.seq_len), "seed": str(settings.seed)},
            )
            (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2))
    result = _result(out, record, reused=False)
    result.seconds = usage.seconds
    return result


def beside(cfg: RunConfig, model_dir: Path, out: Path, calib_dir: Path | None, progress: Progress = NULL) -> Path:
    """The calibration folder a stage writing `out` reads: calib_dir when given, else one built from cfg.calibrate
    into OUT.calib beside `out` (or reused from there when it matches), as quantize and export-gguf both do."""
    if calib_dir is not None:
        return Path(calib_dir)
    calib_dir = Path(out).parent / f"{Path(out).name}.calib"
    log.info(run(cfg, model_dir, calib_dir, progress=progress).summary())
    return calib_dir


def load_samples(calib_dir: Path):
    """input_ids [N, L] int64 of a calibration folder."""
    from safetensors.torch import load_file

    path = Path(calib_dir) / SAMPLES_FILE
    if not path.is_file():
        raise MissingPath(f"{path}: no calibration set; run `tulu-quant calibrate --model DIR --out {calib_dir}`.")
    return load_file(path)["input_ids"]


def _load_record(out: Path) -> dict[str, Any] | None:
    path = out / RECORD_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def _result(out: Path, record: dict[str, Any], reused: bool) -> CalibrateResult:
    return CalibrateResult(
        out,
        record["num_samples"],
        record["seq_len"],
        record["counts"],
        record["tokenizer_sha256"],
        reused,
        record=record,
    )


# ------------------------------------------------------------------------------------------------------ pipeline


def evaluation_pairs(cfg: RunConfig) -> list[tuple[str, str]]:
    """The (source, split) pairs the calibration set must not overlap: calibrate.evaluation when set, else the
    perplexity sources of the validate suite."""
    from ..config import load_suite, split_pair

    if cfg.calibrate.evaluation is not None:
        return [split_pair(pair) for pair in cfg.calibrate.evaluation]
    suite = load_suite(cfg.validate_.suite)
    return [(source, suite.perplexity.split) for source in suite.perplexity.sources]


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's calibrate: RUN_DIR/recovered's tokenizer -> RUN_DIR/calib."""
    out = ctx.out(STAGE)
    model_dir = ctx.produced("recover")
    evaluation = evaluation_pairs(cfg)

    def work() -> dict[str, Any]:
        result = run(cfg, model_dir, out, force=True, progress=ctx.progress)
        return {
            "samples": result.num_samples,
            "seq_len": result.seq_len,
            "counts": result.counts,
            "tokenizer_sha256": result.tokenizer_sha256,
        }

    config = {**cfg.calibrate.model_dump(mode="json"), "chat_format": cfg.model.chat_format, "evaluation": evaluation}
    return Step(
        STAGE.name,
        [model_dir],
        [out],
        config,
        work,
        lambda s: f"{s['samples']} x {s['seq_len']} tokens ({', '.join(f'{k} {v}' for k, v in s['counts'].items())})",
    )
