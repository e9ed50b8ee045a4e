"""GPTQ quantization through GPTQModel 7.6 (or AutoRound 0.16), written as a standard GPTQ (v1) checkpoint.

For every decoder layer, in order, and every linear W [out, in] of it (GPTQ, Frantar et al. 2022):

    H = 2 X X^T + damp * mean(diag H) * I          # X [in, N*L]: the layer inputs of the calibration set
    for each column j (in the order: natural, act order, or group-aware reordering):
        q_j = quant(w_j; scale_g, zero_g)          # 2^bits levels, one (scale, zero) per group of group_size columns
        W[:, j+1:] -= (w_j - q_j) / [H^-1]_jj * [H^-1]_j,j+1:      # spread the error over the columns not yet done

``method: autoround`` runs Intel's AutoRound instead (Cheng et al. 2023): for each decoder layer, signed-gradient
descent on a rounding offset per weight and a clipping factor per group, minimising the layer's output error on the
calibration rows for ``autoround_iters`` steps; the result is exported in the same GPTQ v1 layout.

Output ``gptq/``: ``model.safetensors`` (qweight, qzeros, scales, g_idx per linear; embeddings, norms and lm_head in
float16), ``quantize_config.json``, ``config.json`` with its ``quantization_config`` block, the tokenizer with the chat
template, GPTQModel's per-module ``quant_log.csv`` and our ``quantization.json``. ``transformers`` loads it with
``AutoModelForCausalLM.from_pretrained(dir)`` when GPTQModel and optimum are installed.

Everything GPTQModel would reject later (group sizes, widths that do not split into groups or packing words, CUDA that
is not there) is checked from config.json before any work starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import (
    TOKENIZER_FILES,
    SafetensorsWriter,
    atomic_dir,
    copy_if_present,
    open_checkpoint,
    read_safetensors_header,
    read_tensor,
    refuse_existing,
)
from ..config import QuantizeConfig, RunConfig
from ..errors import MissingLibrary, MissingPath, UserValueError
from ..progress import NULL, Progress, captured, human_bytes, human_seconds, measure
from .base import Context, Stage, Step

log = logging.getLogger(__name__)

STAGE = Stage(
    "quantize",
    output="gptq",
    artifact="GPTQ",
    sweep="variant",
    requires=(
        ("gptqmodel", 'pip install --no-build-isolation "gptqmodel>=7.6,<7.7"'),
        ("optimum", "pip install optimum"),
    ),
)

# GPTQModel 7.6 packs qweight/qzeros in int32 words with its block packer: widths must be multiples of 32.
PACK_BITS = 32
RECORD_FILE = "quantization.json"
# Machine-specific or run-specific fields GPTQModel writes into quantize_config.json's meta; dropped from our output.
META_DROP = ("offload_to_disk_path",)


class QuantizeError(UserValueError):
    """A quantization setting that cannot work for this model or machine: one sentence naming it and what to do."""


@dataclass
class QuantizeResult:
    out: Path
    bits: int
    group_size: int
    sym: bool
    desc_act: bool
    device: str
    layers: int
    bytes: int  # weight files on disk
    fp16_bytes: int  # the same model's weights in float16
    seconds: float
    peak_rss: int
    peak_vram: int | None
    mean_loss: float | None  # GPTQModel's per-module loss, averaged (quant_log.csv)
    compute_dtype: str  # of the calibration forward passes
    compute_dtype_reason: str  # why that dtype (tulu_quant.hardware on CPU)

    @property
    def compression(self) -> float:
        return self.fp16_bytes / self.bytes if self.bytes else float("nan")

    def summary(self) -> str:
        vram = f", peak VRAM {human_bytes(self.peak_vram)}" if self.peak_vram is not None else ""
        return (
            f"quantized {self.layers} layers to {self.bits}-bit g{self.group_size} {'sym' if self.sym else 'asym'}"
            f"{' act-order' if self.desc_act else ''} on {self.device}, {self.compute_dtype} forward "
            f"({self.compute_dtype_reason}) -> {self.out}: {human_bytes(self.bytes)} "
            f"({self.compression:.2f}x smaller than fp16 {human_bytes(self.fp16_bytes)}) in "
            f"{human_seconds(self.seconds)}, peak RAM {human_bytes(self.peak_rss)}{vram}"
        )


# ------------------------------------------------------------------------------------------------------ pure helpers


def read_model_config(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise MissingPath(f"{path}: missing; pass a Hugging Face model directory (e.g. the recover stage's output).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise QuantizeError(f"{path}: not valid JSON ({err}); re-create it.") from None


def linear_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear of a LLaMA-architecture decoder layer."""
    missing = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads") if k not in config]
    if missing:
        raise QuantizeError(f"config.json lacks {', '.join(missing)}; quantize expects a LLaMA-architecture model.")
    hidden, inter, heads = config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    return {
        "self_attn.q_proj": (hidden, heads * head_dim),
        "self_attn.k_proj": (hidden, kv_heads * head_dim),
        "self_attn.v_proj": (hidden, kv_heads * head_dim),
        "self_attn.o_proj": (heads * head_dim, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }


def check_settings(cfg: QuantizeConfig, config: dict[str, Any], source: str = "config.json") -> None:
    """Reject settings that cannot apply to this model's layer widths (before GPTQModel is even imported)."""
    name = f"variant '{cfg.variant}'" if cfg.variant else "quantize settings"
    for linear, (fan_in, fan_out) in linear_shapes(config).items():
        if cfg.group_size != -1 and fan_in % cfg.group_size:
            raise QuantizeError(
                f"{name}: group_size {cfg.group_size} does not divide the input width {fan_in} of "
                f"{linear} ({source}); choose a group size that divides it (e.g. "
                f"{_dividing_group(fan_in, linear_shapes(config))}) or -1."
            )
        for what, width in (("input", fan_in), ("output", fan_out)):
            if width % PACK_BITS:
                raise QuantizeError(
                    f"{name}: {linear} has {what} width {width} ({source}), not a multiple of "
                    f"{PACK_BITS}; GPTQModel 7.6 packs GPTQ weights in {PACK_BITS}-value words and "
                    "cannot quantize it."
                )


def _dividing_group(width: int, shapes: dict[str, tuple[int, int]]) -> int:
    widths = {fan_in for fan_in, _ in shapes.values()}
    fits = [g for g in (128, 64, 32, 16) if all(w % g == 0 for w in widths)]
    return fits[0] if fits else -1


def resolve_device(requested: str) -> str:
    import torch

    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise QuantizeError(
            "quantize.device is cuda but torch sees no CUDA device (a CPU build of torch, or no GPU); "
            "use device: cpu or auto, or install a CUDA build of torch."
        )
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def resolve_dtype(requested: str, device: str, config: dict[str, Any]) -> tuple[str, str]:
    """(compute dtype of the calibration forward passes, why). auto: the model's float16/bfloat16 on cuda; on cpu
    what this CPU computes fast (tulu_quant.hardware: bfloat16 only with native BF16, else float32; as accurate as
    float32 on the stand-in, docs/quantization.md)."""
    from ..hardware import cpu_compute_dtype, cpu_info

    if requested != "auto":
        if device == "cpu" and requested in ("bfloat16", "float16") and not cpu_info().native_bf16:
            log.warning(
                "quantize.compute_dtype %s on %s, which has no native half precision: its matmuls are emulated, and "
                "every layer takes several times longer than with float32 (compute_dtype: auto picks float32 here)",
                requested,
                cpu_info().name,
            )
        return requested, "set by quantize.compute_dtype"
    if device == "cpu":
        return cpu_compute_dtype()
    stored = config.get("dtype") or config.get("torch_dtype") or "float16"
    dtype = stored if stored in ("float16", "bfloat16") else "float16"
    return dtype, f"the model's {dtype} on CUDA"


def vllm_warnings(cfg: QuantizeConfig) -> list[str]:
    """What will keep vLLM from serving this variant, on CUDA (an Ampere-class GPU) and on a CPU with AVX512, one
    sentence each (docs/serving.md has the table per runtime)."""
    from ..backends.vllm_backend import vllm_refusal

    quant = {"bits": cfg.bits, "sym": cfg.sym, "group_size": cfg.group_size, "desc_act": cfg.desc_act}
    cuda = vllm_refusal("gptq", quant, cuda_capability=(8, 0))
    cpu = vllm_refusal("gptq", quant, cpu_flags=frozenset({"avx512f"}))
    if cuda and cuda == cpu:
        return [f"this variant will not load in vLLM: {cuda}."]
    return [
        f"this variant will not load in vLLM on {where}: {why}."
        for where, why in (("CUDA", cuda), ("CPUs", cpu))
        if why
    ]


def note_kernels(cfg: QuantizeConfig) -> None:
    if cfg.bits == 3:
        log.warning(
            "3-bit GPTQ runs only on GPTQModel's generic torch kernel (Marlin, ExLlama and Triton take 2/4/8 "
            "bits): expect slow inference."
        )
    for warning in vllm_warnings(cfg):
        log.warning(warning)


def quant_log_loss(path: Path) -> float | None:
    """Mean per-module loss from GPTQModel's quant_log.csv (None when absent)."""
    import csv

    if not path.is_file():
        return None
    with open(path, newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f) if row.get("loss") not in (None, "")]
    return sum(losses) / len(losses) if losses else None


# ------------------------------------------------------------------------------------------------------ output fix-ups


def restore_float16(folder: Path, model_dir: Path) -> None:
    """GPTQModel saves the tensors it does not quantize (embeddings, norms, lm_head) in its compute dtype, so a bfloat16
    or float32 forward leaves them rounded or doubled in size. The GPTQ v1 layout keeps them in float16: take each one
    from the source model (exact) or cast it. Streams one tensor at a time."""
    import torch

    source = open_checkpoint(model_dir)
    index_path = folder / "model.safetensors.index.json"
    with source.reader() as get_source:
        for path in sorted(folder.glob("*.safetensors")):
            header = read_safetensors_header(path)
            if all(not t.dtype.is_floating_point or t.dtype == torch.float16 for t in header.values()):
                continue
            entries = [
                (t.name, torch.float16 if t.dtype.is_floating_point else t.dtype, t.shape) for t in header.values()
            ]
            tmp = path.with_suffix(".fp16.tmp")
            writer = SafetensorsWriter(tmp, entries)
            for info in header.values():
                tensor = read_tensor(info)
                if tensor.is_floating_point() and tensor.dtype != torch.float16:
                    original = source.tensors.get(info.name)
                    exact = original is not None and original.shape == info.shape
                    tensor = (get_source(info.name) if exact else tensor).to(torch.float16)
                writer.write(info.name, tensor)
            writer.close()
            tmp.replace(path)
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        index.setdefault("metadata", {})["total_size"] = open_checkpoint(folder).total_bytes()
        index_path.write_text(json.dumps(index, indent=2))


def finish_metadata(tmp: Path, model_dir: Path, source_config: dict[str, Any], chat_format: str) -> None:
    """config.json = the source's config + GPTQModel's quantization_config (dtype float16); tokenizer and chat template
    from the source model (GPTQModel rewrites tokenizer_config with its own pad token)."""
    from ..chat import install_template

    written = json.loads((tmp / "config.json").read_text())
    quantization = _drop_meta(written["quantization_config"])
    config = {**source_config, "quantization_config": quantization, "dtype": "float16"}
    config.pop("torch_dtype", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    qc_path = tmp / "quantize_config.json"
    qc_path.write_text(json.dumps(_drop_meta(json.loads(qc_path.read_text())), indent=2))
    for name in TOKENIZER_FILES:
        (tmp / name).unlink(missing_ok=True)
    copy_if_present(model_dir, tmp, [*TOKENIZER_FILES, "generation_config.json"])
    install_template(tmp, chat_format)


def _drop_meta(block: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (block.get("meta") or {}).items() if k not in META_DROP}
    return {**block, "meta": meta}


# ------------------------------------------------------------------------------------------------------ GPTQModel


class LayerProgress:
    """GPTQModel's layer callback (``model.layer_callback``): advances the progress bar, or logs one line per finished
    layer with the time left when there is no bar (not a terminal)."""

    def __init__(self, total: int, advance=None):
        self.total, self.done, self.start, self.advance = total, 0, time.perf_counter(), advance

    def layer_complete(self, layer_idx: int, submodule_finalized: bool):
        if submodule_finalized:  # the same layer again, after packing
            return None
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        if self.advance is not None:
            self.advance(1, left=human_seconds(left))
        else:
            log.info(
                "quantize: layer %d/%d done, %s elapsed, about %s left",
                self.done,
                self.total,
                human_seconds(elapsed),
                human_seconds(left),
            )
        return None


def set_cpu_workers() -> None:
    """GPTQModel's default CPU pool on a 1-2 core machine is 1 worker, and its loader asks for 2 (ValueError: Virtual
    pool 'model_loader:cpu' requests 2 workers but parent 'cpu' only has 1). Set before GPTQModel is imported; a value
    the user exported wins."""
    if (os.cpu_count() or 1) <= 3:
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")


def gptqmodel_quantize(
    model_dir: Path,
    samples,
    cfg: QuantizeConfig,
    device: str,
    dtype: str,
    save_dir: Path,
    offload_dir: Path,
    callback: LayerProgress,
) -> None:
    """The one call into GPTQModel: load, quantize with the calibration rows, save."""
    set_cpu_workers()
    import torch

    try:
        from gptqmodel import GPTQModel
        from gptqmodel import QuantizeConfig as GPTQModelConfig
    except ImportError as err:
        raise MissingLibrary(
            f"GPTQModel is not importable ({err}); install it with "
            "`pip install --no-build-isolation 'gptqmodel>=7.6,<7.7'` after torch."
        ) from None
    from gptqmodel.quantization.config import FOEMConfig, GPTAQConfig

    qcfg = GPTQModelConfig(
        bits=cfg.bits,
        group_size=cfg.group_size,
        desc_act=cfg.desc_act,
        sym=cfg.sym,
        damp_percent=cfg.damp_percent,
        true_sequential=cfg.true_sequential,
        act_group_aware=cfg.group_aware,
        static_groups=cfg.static_groups,
        mse=cfg.mse,
        offload_to_disk=cfg.offload_to_disk,
        offload_to_disk_path=str(offload_dir),
        device=device,
        gptaq=GPTAQConfig(alpha=cfg.gptaq_alpha) if cfg.gptaq_alpha and not cfg.foem_beta else None,
        foem=FOEMConfig(alpha=cfg.gptaq_alpha, beta=cfg.foem_beta) if cfg.foem_beta else None,
    )
    model = GPTQModel.load(str(model_dir), qcfg, dtype=getattr(torch, dtype))
    model.layer_callback = callback
    calibration = [{"input_ids": row, "attention_mask": torch.ones_like(row)} for row in samples]
    with gptqmodel_layer_logs(offload_dir / "logs"):
        model.quantize(calibration, batch_size=cfg.batch_size)
    model.save(str(save_dir))


@contextlib.contextmanager
def gptqmodel_layer_logs(folder: Path):
    """GPTQModel 7.6 appends a JSON record per quantized module to ./logs/ of the current directory, from a worker
    thread that ends the whole process (os._exit(1)) when a write fails, as on a full disk. While quantizing, the
    records go to `folder` (inside the stage's temporary directory) and a failed write is logged, not fatal: the
    checkpoint's own save then fails on the same disk and the stage says so in one sentence."""
    from gptqmodel.looper import loop_processor

    processor, saved = loop_processor.LoopProcessor, loop_processor._PROJECT_LOG_DIR
    writer = processor._async_log_writer

    def tolerant_writer(self, stat):
        try:
            writer(self, stat)
        except OSError as err:
            log.warning("GPTQModel's layer log could not be written: %s", err)

    loop_processor._PROJECT_LOG_DIR, processor._async_log_writer = folder, tolerant_writer
    try:
        yield
    finally:
        loop_processor._PROJECT_LOG_DIR, processor._async_log_writer = saved, writer


# ------------------------------------------------------------------------------------------------------ AutoRound


class AutoRoundBlocks(logging.Handler):
    """AutoRound reports each finished decoder layer with one log line ("quantized 7/7 layers in the block, loss iter
    0: A -> iter N: B"); this handler turns those into LayerProgress steps and keeps the losses for quant_log.csv."""

    PATTERN = r"layers in the block(?:, loss iter 0: ([0-9.e+-]+) -> iter \d+: ([0-9.e+-]+))?"

    def __init__(self, callback: LayerProgress):
        super().__init__(logging.INFO)
        self.callback, self.losses = callback, []

    def emit(self, record: logging.LogRecord) -> None:
        import re

        found = re.search(self.PATTERN, record.getMessage())
        if found is None:
            return
        if found.group(1):
            self.losses.append((float(found.group(1)), float(found.group(2))))
        self.callback.layer_complete(self.callback.done, False)


def autoround_options(cfg: QuantizeConfig) -> dict[str, Any]:
    """AutoRound keyword arguments that are passed only when the config sets them, so None keeps AutoRound's default."""
    return {} if cfg.autoround_torch_compile is None else {"enable_torch_compile": cfg.autoround_torch_compile}


def autoround_quantize(
    model_dir: Path,
    samples,
    cfg: QuantizeConfig,
    device: str,
    dtype: str,
    save_dir: Path,
    offload_dir: Path,
    callback: LayerProgress,
) -> None:
    """The one call into AutoRound: tune each decoder layer's rounding and clipping on the calibration rows for
    cfg.autoround_iters sign-gradient steps, then export the GPTQ v1 format (quant_method gptq) into save_dir."""
    import torch

    try:
        from auto_round import AutoRound
    except ImportError as err:
        raise MissingLibrary(
            f"AutoRound is not importable ({err}); install it with `pip install auto-round==0.16.1` "
            "or set quantize.method: gptq."
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    batch = cfg.batch_size
    batches = [
        {"input_ids": samples[i : i + batch], "attention_mask": torch.ones_like(samples[i : i + batch])}
        for i in range(0, len(samples), batch)
    ]
    blocks = AutoRoundBlocks(callback)
    logging.getLogger("autoround").addHandler(blocks)
    try:
        rounder = AutoRound(
            model,
            AutoTokenizer.from_pretrained(model_dir),
            bits=cfg.bits,
            group_size=cfg.group_size,
            sym=cfg.sym,
            iters=cfg.autoround_iters,
            dataset=batches,
            nsamples=len(samples),
            seqlen=samples.shape[1],
            batch_size=batch,
            device_map=device,
            **autoround_options(cfg),
        )
        rounder.quantize_and_save(str(offload_dir), format="auto_gptq")
    finally:
        logging.getLogger("autoround").removeHandler(blocks)
    (written,) = {p.parent for p in offload_dir.rglob("config.json")}
    for path in written.iterdir():
        shutil.move(str(path), save_dir / path.name)
    # The GPTQ tools read quantize_config.json; AutoRound writes the same block as quantization_config.json.
    quant = json.loads((save_dir / "config.json").read_text())["quantization_config"]
    (save_dir / "quantize_config.json").write_text(json.dumps(quant, indent=2))
    (save_dir / "quantization_config.json").unlink(missing_ok=True)
    rows = [f"{i},{before},{after}" for i, (before, after) in enumerate(blocks.losses)]
    (save_dir / "quant_log.csv").write_text("\n".join(["layer,loss_start,loss", *rows]) + "\n")


QUANTIZERS = {"gptq": gptqmodel_quantize, "autoround": autoround_quantize}


# ------------------------------------------------------------------------------------------------------ the stage


def run(
    cfg: RunConfig,
    model_dir: Path,
    out: Path,
    calib_dir: Path | None = None,
    force: bool = False,
    progress: Progress = NULL,
    log_file: Path | None = None,
) -> QuantizeResult:
    """GPTQ-quantize model_dir into `out` as cfg.quantize says, with the calibration set in calib_dir (None: built
    from cfg.calibrate into OUT.calib beside `out`, or reused from there when it matches). The checkpoint ships the
    chat template of cfg.model.chat_format; GPTQModel's console output goes to log_file."""
    import torch
    from transformers import AutoTokenizer

    from ..chat import resolve_format
    from . import calibrate

    model_dir, out = Path(model_dir), Path(out)
    refuse_existing(out, force)
    source_config = read_model_config(model_dir)
    settings = cfg.quantize
    check_settings(settings, source_config, str(model_dir / "config.json"))
    device = resolve_device(settings.device)
    dtype, dtype_reason = resolve_dtype(settings.compute_dtype, device, source_config)
    note_kernels(settings)
    chat_format = resolve_format(cfg.model.chat_format, AutoTokenizer.from_pretrained(model_dir))
    calib_dir = calibrate.beside(cfg, model_dir, out, calib_dir, progress)
    samples = calibrate.load_samples(calib_dir)
    _check_calibration(calib_dir, model_dir, samples, source_config)
    fp16_bytes = sum(
        t.numel * 2 if t.dtype.is_floating_point else t.numel * t.dtype.itemsize
        for t in open_checkpoint(model_dir).tensors.values()
    )
    layers = int(source_config.get("num_hidden_layers", 0))
    log.info(
        "quantize: %s %d-bit g%d %s%s on %s (%s forward: %s), %d x %d calibration tokens, %d layers; the library's "
        "own output goes to %s",
        "AutoRound" if settings.method == "autoround" else "GPTQ",
        settings.bits,
        settings.group_size,
        "sym" if settings.sym else "asym",
        " act-order" if settings.desc_act else "",
        device,
        dtype,
        dtype_reason,
        samples.shape[0],
        samples.shape[1],
        layers,
        log_file or "the terminal",
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    offload_dir = out.parent / f".{out.name}.offload-{os.getpid()}"
    with measure() as usage:
        with atomic_dir(out, force) as tmp:
            try:
                with captured(log_file), progress.task("quantize", total=layers, unit="layer") as advance:
                    callback = LayerProgress(layers, advance if progress.enabled else None)
                    quantizer = QUANTIZERS[settings.method]
                    quantizer(model_dir, samples, settings, device, dtype, tmp, offload_dir, callback)
            finally:
                shutil.rmtree(offload_dir, ignore_errors=True)
            restore_float16(tmp, model_dir)
            finish_metadata(tmp, model_dir, source_config, chat_format)
            size = sum(p.stat().st_size for p in tmp.glob("*.safetensors"))
            result = QuantizeResult(
                out,
                settings.bits,
                settings.group_size,
                settings.sym,
                settings.desc_act,
                device,
                layers,
                size,
                fp16_bytes,
                0.0,
                0,
                None,
                quant_log_loss(tmp / "quant_log.csv"),
                dtype,
                dtype_reason,
            )
            (tmp / RECORD_FILE).write_text(json.dumps(_record(result, settings, calib_dir), indent=2))
    result.seconds, result.peak_rss = usage.seconds, usage.peak_rss
    result.peak_vram = torch.cuda.max_memory_allocated() if device == "cuda" else None
    record = json.loads((out / RECORD_FILE).read_text())
    record.update(seconds=round(result.seconds, 2), peak_rss=result.peak_rss, peak_vram=result.peak_vram)
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return result


def _check_calibration(calib_dir: Path, model_dir: Path, samples, config: dict[str, Any]) -> None:
    from .calibrate import RECORD_FILE as CALIB_RECORD
    from .calibrate import tokenizer_sha256

    record_path = calib_dir / CALIB_RECORD
    if record_path.is_file():
        made_with = json.loads(record_path.read_text()).get("tokenizer_sha256")
        if made_with and made_with != tokenizer_sha256(model_dir):
            raise QuantizeError(
                f"{calib_dir}: the calibration set was tokenized with another tokenizer than "
                f"{model_dir}'s; rebuild it with `tulu-quant calibrate --model {model_dir}`."
            )
    vocab = config.get("vocab_size")
    if vocab is not None and int(samples.max()) >= vocab:
        raise QuantizeError(
            f"{calib_dir}: token id {int(samples.max())} is outside the model's vocabulary ({vocab}); "
            "rebuild the calibration set with this model's tokenizer."
        )


def _record(result: QuantizeResult, cfg: QuantizeConfig, calib_dir: Path) -> dict[str, Any]:
    from ..hardware import cpu_info
    from ..manifest import library_versions

    calib_record = calib_dir / "calibration.json"
    record = {k: v for k, v in asdict(result).items() if k != "out"}
    record.update(
        compression=round(result.compression, 3),
        config=cfg.model_dump(mode="json"),
        cpu=cpu_info().record(),
        calibration=json.loads(calib_record.read_text()) if calib_record.is_file() else None,
        libraries=library_versions(),
    )
    return record


# ------------------------------------------------------------------------------------------------------ pipeline


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's quantize: RUN_DIR/recovered + RUN_DIR/calib -> RUN_DIR/gptq."""
    out = ctx.out(STAGE)
    model_dir, calib_dir = ctx.produced("recover"), ctx.produced("calibrate")
    check_settings(cfg.quantize, read_model_config(model_dir), str(model_dir / "config.json"))

    def work() -> dict[str, Any]:
        result = run(cfg, model_dir, out, calib_dir, force=True, progress=ctx.progress, log_file=ctx.log_file)
        ctx.progress.echo(result.summary())
        return {
            "bytes": result.bytes,
            "compression": round(result.compression, 2),
            "bits": result.bits,
            "group_size": result.group_size,
            "device": result.device,
            "compute_dtype": result.compute_dtype,
            "peak_vram": result.peak_vram,
        }

    config = {**cfg.quantize.model_dump(mode="json"), "chat_format": cfg.model.chat_format}
    return Step(
        STAGE.name,
        [model_dir, calib_dir],
        [out],
        config,
        work,
        lambda s: f"{s['bits']}-bit g{s['group_size']}, {human_bytes(s['bytes'])} ({s['compression']}x)",
    )
