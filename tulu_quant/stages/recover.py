"""Recover a finetuned model from raw base weights + a weight diff, streaming one tensor at a time.

The result equals AllenAI's open-instruct ``scripts/weight_diff.py recover``:

    base, diff  <- float32
    if diff has more vocabulary rows than base (tokens added in finetuning, Tulu's <pad>):
        base_embed[new rows] = mean(base_embed[original rows])        # the same for lm_head, each its own mean
    tuned[k] = base[k] + diff[k]   for every key k                       # float32, then cast once to --dtype

open-instruct holds both models in float32 (about 104 GB for 13B). Here only the tensor being added is in memory: file
headers give every shape up front, so the output header is written first and each sum streams straight to disk.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import (
    TOKENIZER_FILES,
    Checkpoint,
    CheckpointError,
    SafetensorsWriter,
    atomic_dir,
    copy_if_present,
    has_vocabulary,
    open_checkpoint,
    plan_shards,
    refuse_existing,
    shard_names,
    write_index,
)
from ..config import RecoverConfig, RunConfig, parse_size
from ..errors import UserValueError
from ..progress import NULL, Progress, human_bytes, human_seconds, measure
from .base import Context, Stage, Step

log = logging.getLogger(__name__)

STAGE = Stage("recover", output="recovered", artifact="fp16 (reference)", sweep="shared")

# Fields whose disagreement means the base is not the model the diff was made from (LLaMA-2 13B has LLaMA-1 13B's
# tensor shapes but another rms_norm_eps and max_position_embeddings).
CONFIG_FIELDS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "max_position_embeddings",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "tie_word_embeddings",
)
# Non-persistent buffers that old conversions saved and transformers recomputes; never part of the weights.
BUFFER_PATTERN = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


class RecoverError(UserValueError):
    """Bad input to recovery: one sentence naming the file/key and what to do."""


@dataclass
class RecoverResult:
    out: Path
    shards: dict[str, str]  # file name -> sha256
    bytes: int
    tensors: int
    added_rows: dict[str, int]
    diff_scale_median: float
    seconds: float
    peak_rss: int
    verify: dict[str, Any] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        extra = f", verify ppl {self.verify['perplexity']:.2f}" if self.verify else ""
        return (
            f"recovered {self.tensors} tensors into {self.out} ({len(self.shards)} shard(s), "
            f"{human_bytes(self.bytes)}) in {human_seconds(self.seconds)}, peak RSS {human_bytes(self.peak_rss)}{extra}"
        )


# ------------------------------------------------------------------------------------------------------ pure helpers


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_config(root: Path) -> dict[str, Any] | None:
    path = root / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RecoverError(f"{path}: not valid JSON ({err}); re-download it.") from None


def config_differences(base: dict[str, Any], diff: dict[str, Any]) -> list[str]:
    """Architecture fields on which the two configs disagree (fields absent on both sides are ignored)."""
    diffs = []
    for key in CONFIG_FIELDS:
        if key in base or key in diff:
            a, b = base.get(key), diff.get(key)
            if a != b and not (
                isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-12 * max(abs(a), abs(b))
            ):
                diffs.append(f"{key} (base {a!r}, diff {b!r})")
    return diffs


def vocab_growth(base: Checkpoint, diff: Checkpoint, names: list[str]) -> tuple[dict[str, int], list[str], list[str]]:
    """(rows added per key, keys whose diff has fewer rows, keys with other shape mismatches)."""
    added, shrunk, mismatched = {}, [], []
    for name in names:
        b, d = base.tensors[name].shape, diff.tensors[name].shape
        if b == d:
            continue
        if len(b) == len(d) >= 1 and b[1:] == d[1:]:
            (added.__setitem__(name, d[0] - b[0]) if d[0] > b[0] else shrunk.append(f"{name} {b}->{d}"))
        else:
            mismatched.append(f"{name}: base {b}, diff {d}")
    return added, shrunk, mismatched


def relative_norm(base_t, diff_t) -> float:
    """||diff|| / ||base|| over the rows both have (float32)."""
    rows = min(base_t.shape[0], diff_t.shape[0]) if base_t.dim() else None
    b = base_t[:rows].float() if rows is not None else base_t.float()
    d = diff_t[:rows].float() if rows is not None else diff_t.float()
    nb = float(b.norm())
    return float(d.norm()) / nb if nb > 0 else float("inf")


def recover_tensor(base_t, diff_t, dtype):
    """base + diff in float32 with added vocabulary rows set to the mean of the base's rows; cast once to dtype."""
    import torch

    b = base_t.to(torch.float32, copy=True) if base_t.is_floating_point() else base_t.clone()
    if diff_t.shape[0:1] != b.shape[0:1]:
        mean = b.mean(dim=0, keepdim=True)  # open-instruct: input_embeddings[:-n].mean(dim=0, keepdim=True)
        b = torch.cat([b, mean.expand(diff_t.shape[0] - b.shape[0], *b.shape[1:])])
    tuned = b.add_(diff_t.float() if diff_t.is_floating_point() else diff_t)  # in place: one full-size copy fewer
    return tuned.to(dtype) if tuned.is_floating_point() else tuned


# ------------------------------------------------------------------------------------------------------ checks


def check_inputs(
    base: Checkpoint, diff: Checkpoint, base_cfg, diff_cfg, cfg: RecoverConfig
) -> tuple[list[str], dict[str, int]]:
    """All checks that need no tensor data. Returns (keys to recover, added rows per key)."""
    skip = set(cfg.skip_checks)
    base_keys = {k for k in base.tensors if not BUFFER_PATTERN.search(k)}
    diff_keys = {k for k in diff.tensors if not BUFFER_PATTERN.search(k)}
    only_base, only_diff = (
        sorted(base_keys - diff_keys, key=natural_key),
        sorted(diff_keys - base_keys, key=natural_key),
    )
    if (only_base or only_diff) and "keys" not in skip:
        raise RecoverError(
            f"{base.root} and {diff.root} hold different tensors: only in base {_few(only_base)}, only in "
            f"diff {_few(only_diff)}; pass matching checkpoints (or --skip-check keys to recover the "
            "common keys only)."
        )
    names = sorted(base_keys & diff_keys, key=natural_key)
    added, shrunk, mismatched = vocab_growth(base, diff, names)
    if shrunk:
        raise RecoverError(
            f"{diff.root}: the diff has a smaller vocabulary than the base ({_few(shrunk)}); the arguments "
            "may be swapped: --base is raw LLaMA, --diff the Tulu diff."
        )
    if mismatched:
        raise RecoverError(
            f"{base.root} and {diff.root}: shapes differ beyond added vocabulary rows ({_few(mismatched)}); "
            "the base is not the model this diff was made from."
        )
    if base_cfg is not None and diff_cfg is not None and "config" not in skip:
        fields = config_differences(base_cfg, diff_cfg)
        if fields:
            raise RecoverError(
                f"{base.root / 'config.json'} does not match {diff.root / 'config.json'} on "
                f"{', '.join(fields)}; the base is a different model (LLaMA-2 instead of LLaMA-1?). "
                "Use the base the diff was made from, or --skip-check config."
            )
    return names, added


def check_diff_scale(
    base: Checkpoint, diff: Checkpoint, names: list[str], cfg: RecoverConfig, samples: int = 12
) -> float:
    """Median ||diff||/||base|| over a spread of matrices. A finetuning diff is small next to the weights: a full model
    passed as the diff gives about 1, swapped arguments much more than 1."""
    matrices = [n for n in names if len(base.tensors[n].shape) == 2]
    if not matrices:
        return float("nan")
    picked = [
        matrices[round(i * (len(matrices) - 1) / max(samples - 1, 1))] for i in range(min(samples, len(matrices)))
    ]
    with base.reader() as get_base, diff.reader() as get_diff:
        ratios = [relative_norm(get_base(n), get_diff(n)) for n in dict.fromkeys(picked)]
    median = statistics.median(ratios)
    if median > cfg.diff_scale_threshold and "diff-scale" not in cfg.skip_checks:
        raise RecoverError(
            f"{diff.root}: the diff is as large as the weights (median ||diff||/||base|| = {median:.3g}, "
            f"a finetuning diff is below {cfg.diff_scale_threshold}); this looks like a full model or swapped "
            "arguments: --base is raw LLaMA, --diff the weight diff (or --skip-check diff-scale)."
        )
    return median


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# ------------------------------------------------------------------------------------------------------ the stage


def run(cfg: RunConfig, out: Path, force: bool = False, progress: Progress = NULL) -> RecoverResult:
    """Recover cfg.model.base + cfg.model.diff into `out` (settings: cfg.recover; --verify's chat sample in
    cfg.model.chat_format). Refuses an existing `out` unless force; writes nothing that looks finished on failure."""
    import torch

    for key in ("base", "diff"):
        if getattr(cfg.model, key) is None:
            raise RecoverError(f"model.{key} is not set; pass --{key} DIR (or set model.{key} in the config).")
    base_dir, diff_dir, out = Path(cfg.model.base), Path(cfg.model.diff), Path(out)
    chat_format = cfg.model.chat_format
    cfg = cfg.recover
    refuse_existing(out, force)
    dtype = getattr(torch, cfg.dtype)
    with measure() as usage:
        try:
            base, diff = open_checkpoint(base_dir), open_checkpoint(diff_dir)
        except CheckpointError as err:
            raise RecoverError(str(err)) from None
        base_cfg, diff_cfg = read_config(base_dir), read_config(diff_dir)
        names, added = check_inputs(base, diff, base_cfg, diff_cfg, cfg)
        scale = check_diff_scale(base, diff, names, cfg)

        entries = [
            (n, dtype if diff.tensors[n].dtype.is_floating_point else diff.tensors[n].dtype, diff.tensors[n].shape)
            for n in names
        ]
        shards = plan_shards(entries, parse_size(cfg.max_shard_size))
        files = shard_names(len(shards))
        total = sum(e[1].itemsize * _numel(e[2]) for e in entries)
        hashes: dict[str, str] = {}
        with atomic_dir(out, force) as tmp, base.reader() as get_base, diff.reader() as get_diff:
            with progress.task("recover", total=total, unit="B", unit_scale=True) as advance:
                for shard, fname in zip(shards, files):
                    writer = SafetensorsWriter(tmp / fname, shard)
                    for name, _, _ in shard:
                        tuned = recover_tensor(get_base(name), get_diff(name), dtype)
                        if (
                            tuned.is_floating_point()
                            and not bool(torch.isfinite(tuned).all())
                            and "finite" not in cfg.skip_checks
                        ):
                            raise RecoverError(
                                f"tensor {name} has NaN or Inf after recovery in {cfg.dtype} "
                                f"({base.tensors[name].file.name} + {diff.tensors[name].file.name}); check "
                                "the inputs, try --dtype float32/bfloat16, or --skip-check finite."
                            )
                        writer.write(name, tuned)
                        advance(tuned.numel() * tuned.element_size())
                        del tuned
                    hashes[fname] = writer.close()
            write_index(tmp, shards, files)
            _write_metadata(tmp, base_dir, diff_dir, base_cfg, diff_cfg, cfg.dtype, entries)
            verify = None
            if cfg.verify and "verify" not in cfg.skip_checks:
                from ..layerwise_verify import verify_model

                verify = verify_model(tmp, cfg.verify_max_ppl, cfg.verify_new_tokens, chat_format, progress)
            inputs = {"base": _describe(base), "diff": _describe(diff)}
            result = RecoverResult(out, hashes, total, len(entries), added, scale, 0.0, 0, verify, inputs)
            (tmp / "recovery.json").write_text(json.dumps(_record(result, cfg, usage), indent=2))
    result.seconds, result.peak_rss = usage.seconds, usage.peak_rss
    _rewrite_timing(out / "recovery.json", result)
    return result


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _write_metadata(tmp: Path, base_dir: Path, diff_dir: Path, base_cfg, diff_cfg, dtype: str, entries) -> None:
    config = dict(diff_cfg or base_cfg or {})
    if not config:
        log.warning("neither %s nor %s has config.json; the output has none either", base_dir, diff_dir)
    else:
        shapes = dict((n, s) for n, _, s in entries)
        embed = next((s for n, s in shapes.items() if n.endswith("embed_tokens.weight")), None)
        if embed is not None:
            config["vocab_size"] = embed[0]
        config["dtype"] = dtype
        if "torch_dtype" in config:
            config["torch_dtype"] = dtype
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
    copy_if_present(diff_dir, tmp, TOKENIZER_FILES)
    if not has_vocabulary(tmp):  # the diff's tokenizer wins; the base fills in what it lacks
        log.warning("%s has no tokenizer vocabulary; taking the base's tokenizer files it lacks", diff_dir)
        copy_if_present(base_dir, tmp, [name for name in TOKENIZER_FILES if not (tmp / name).is_file()])
    if not has_vocabulary(tmp):
        log.warning("neither %s nor %s has a tokenizer vocabulary; the output cannot tokenize", base_dir, diff_dir)
    copy_if_present(
        diff_dir if (diff_dir / "generation_config.json").is_file() else base_dir, tmp, ["generation_config.json"]
    )


def _describe(ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "path": str(ckpt.root.resolve()),
        "format": ckpt.format,
        "files": [p.name for p in ckpt.files()],
        "tensors": len(ckpt.tensors),
        "bytes": sum(p.stat().st_size for p in ckpt.files()),
    }


def _record(result: RecoverResult, cfg: RecoverConfig, usage) -> dict[str, Any]:
    record = asdict(result)
    record["out"] = str(result.out)
    record["config"] = cfg.model_dump(mode="json")
    record["algorithm"] = "open-instruct weight_diff.py recover (float32 sum; added vocab rows = mean of base rows)"
    return record


def _rewrite_timing(path: Path, result: RecoverResult) -> None:
    record = json.loads(path.read_text())
    record["seconds"], record["peak_rss"] = round(result.seconds, 4), result.peak_rss  # a tiny model takes milliseconds
    path.write_text(json.dumps(record, indent=2))


# ------------------------------------------------------------------------------------------------------ pipeline


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's recover: model.base + model.diff -> RUN_DIR/recovered."""
    out = ctx.out(STAGE)

    def work() -> dict[str, Any]:
        result = run(cfg, out, force=True, progress=ctx.progress)
        return {
            "bytes": result.bytes,
            "tensors": result.tensors,
            "added_rows": result.added_rows,
            "diff_scale_median": result.diff_scale_median,
            "verify": result.verify,
        }

    return Step(
        STAGE.name,
        [cfg.model.base, cfg.model.diff],
        [out],
        {"model": cfg.model.name, "chat_format": cfg.model.chat_format, **cfg.recover.model_dump(mode="json")},
        work,
        lambda s: f"{s['tensors']} tensors, {human_bytes(s['bytes'])}",
    )
