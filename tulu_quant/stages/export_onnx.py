"""Export to ONNX for the edge through onnxruntime-genai's model builder, then check the graph and verify the result.

    model (fp16 HF folder) --builder, precision int4 | fp16 | fp32 ------------------> out/model.onnx(.data)
    GPTQ checkpoint (4-bit, GPTQ v1 format) --builder, int4, weights kept (repacked) --> out/model.onnx(.data)
    + genai_config.json, the model's HF tokenizer files, our chat template (chat_template.jinja, tokenizer_config.json)
    + export.json: options, graph summary, size on disk, verification

int4 from the fp16 model uses the builder's weight-only quantizer (MatMulNBits, one scale per block of `block_size`
input channels, a zero point per block when asymmetric, RTN or k-quant). From a GPTQ checkpoint the quantized layers
keep GPTQ's integers, scales and zero points; what GPTQ left in float (the lm_head, and the embeddings when tied to
it) follows `lm_head`: float, int8 or int4 with the quantizer settings above.

Verification (cpu target, or a target whose execution provider is installed), on the first `verify_tokens` tokens of
the evaluation text: fp32/fp16 exports must match the float32 torch model (max |delta logit| / max |logit| within the
configured tolerance); int4 exports report top-1 agreement and KL divergence against the fp16 model and fail only
below a floor that catches broken exports; every export must generate greedily.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..backends.onnx_backend import runnable_here
from ..checkpoint import TOKENIZER_FILES, atomic_dir, copy_if_present, dir_size, refuse_existing
from ..config import ExportOnnxConfig, RunConfig
from ..errors import MissingLibrary, UserValueError
from ..progress import NULL, Progress, captured, human_bytes, human_seconds, measure
from .base import Context, Stage, StageNotReady, Step

log = logging.getLogger(__name__)

STAGE = Stage(
    "export_onnx",
    output="onnx",
    artifact="ONNX",
    sweep="variant",
    requires=(("onnxruntime_genai", "pip install onnxruntime-genai"), ("onnx_ir", "pip install onnx-ir")),
)

# The precision/target pairs onnxruntime-genai 0.18's builder supports (its own list, printed by `builder --help`).
SUPPORTED = {"cpu": ("int4", "fp32"), "cuda": ("int4", "fp16", "fp32"), "dml": ("int4", "fp16"), "webgpu": ("int4",)}
# Settings that only mean something when the builder quantizes (int4); an explicit value with fp16/fp32 is an error.
QUANTIZER_KEYS = ("block_size", "symmetric", "accuracy_level", "algorithm", "lm_head")
RECORD = "export.json"
ONNX_FILES = ("model.onnx", "model.onnx.data")
ELEM_TYPES = {1: "float32", 10: "float16", 16: "bfloat16"}  # onnx.TensorProto element types of the model's logits


class ExportError(UserValueError):
    """Bad input to the export, or an export that failed its checks: one sentence naming what to fix."""


@dataclass
class ExportResult:
    out: Path
    precision: str
    target: str
    source: str  # "fp16" or "gptq"
    builder_options: dict[str, str]
    graph: dict[str, Any]
    onnx_bytes: int
    folder_bytes: int
    verification: dict[str, Any]
    seconds: float = 0.0
    peak_rss: int = 0
    inputs: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        v = self.verification
        detail = (
            ("verification skipped: " + v["skipped"])
            if "skipped" in v
            else ", ".join(f"{k} {v[k]:.3g}" for k in ("max_rel_diff", "top1_agreement", "kl_mean") if k in v)
        )
        return (
            f"{self.precision} {self.target} ONNX from {self.source} in {self.out} ({human_bytes(self.onnx_bytes)}) in "
            f"{human_seconds(self.seconds)}, peak RSS {human_bytes(self.peak_rss)}; {detail}"
        )


# ------------------------------------------------------------------------------------------------------ pure helpers


def check_request(cfg: ExportOnnxConfig, gptq: bool) -> None:
    """Reject combinations the builder cannot produce before any work starts."""
    if cfg.precision not in SUPPORTED[cfg.target]:
        raise ExportError(
            f"precision {cfg.precision} on target {cfg.target} is not supported by the onnxruntime-genai "
            f"builder; for {cfg.target} choose one of {list(SUPPORTED[cfg.target])}."
        )
    if gptq and cfg.precision != "int4":
        raise ExportError(
            f"--from-gptq keeps the GPTQ checkpoint's 4-bit weights, so it needs --precision int4, not "
            f"{cfg.precision}; drop --from-gptq to export {cfg.precision} from the fp16 model."
        )
    explicit = sorted(set(QUANTIZER_KEYS) & cfg.model_fields_set)
    if cfg.precision != "int4" and explicit:
        raise ExportError(f"{', '.join(explicit)} only apply to int4 exports; remove them or use --precision int4.")
    if cfg.precision == "int4" and cfg.symmetric and cfg.algorithm == "k_quant":
        raise ExportError(
            "k_quant always stores a zero point per block, so it cannot be symmetric; set symmetric false "
            "(--asymmetric) or algorithm rtn."
        )


def matmul_widths(model_config: dict[str, Any]) -> dict[str, int]:
    """Input width K of each kind of projection the builder turns into a MatMul."""
    hidden = int(model_config["hidden_size"])
    heads = int(model_config["num_attention_heads"])
    head_dim = int(model_config.get("head_dim") or hidden // heads)
    return {
        "hidden_size (q/k/v, gate/up, lm_head)": hidden,
        "attention output (o_proj)": heads * head_dim,
        "intermediate_size (down_proj)": int(model_config["intermediate_size"]),
    }


def needs_even_blocks(cfg: ExportOnnxConfig) -> bool:
    """onnxruntime 1.32's rtn/k_quant packer stores two zero points per byte across the rows of a weight, which only
    works when each row has an even number of blocks (it fails on reshape otherwise). Symmetric RTN writes no zero
    points; k_quant always does."""
    return cfg.algorithm == "k_quant" or not cfg.symmetric


BLOCK_SIZES = (16, 32, 64, 128, 256)


def odd_block_widths(block_size: int, widths: dict[str, int]) -> dict[str, int]:
    return {name: width for name, width in widths.items() if math.ceil(width / block_size) % 2}


def fit_block_size(cfg: ExportOnnxConfig, model_config: dict[str, Any], gptq: bool) -> ExportOnnxConfig:
    """The quantizer settings the zero-point packer can store for this model (see needs_even_blocks). A default that
    splits some width into an odd number of blocks is adapted and logged: the fitting block size nearest the default
    (the smaller on a tie), else symmetric RTN, which stores no zero points and so fits any width. A block_size,
    algorithm or symmetric the user set explicitly is kept, and one that cannot work is an error."""
    if cfg.precision != "int4" or not needs_even_blocks(cfg) or (gptq and cfg.lm_head != "int4"):
        return cfg
    widths = matmul_widths(model_config)
    if gptq:  # only the lm_head is quantized by the builder
        widths = {k: v for k, v in widths.items() if k.startswith("hidden_size")}
    odd = odd_block_widths(cfg.block_size, widths)
    if not odd:
        return cfg
    split = ", ".join(f"{n} = {w}" for n, w in odd.items())
    fits = [b for b in BLOCK_SIZES if not odd_block_widths(b, widths)]
    if "block_size" in cfg.model_fields_set:
        raise ExportError(
            f"block_size {cfg.block_size} splits {split} into an odd number of blocks, which onnxruntime's "
            f"{cfg.algorithm} packer cannot store; use block_size in {fits} or algorithm rtn with symmetric true."
        )
    if fits:
        choice = min(fits, key=lambda b: (abs(math.log2(b / cfg.block_size)), b))
        log.warning(
            "export_onnx.block_size: the default %d splits %s into an odd number of blocks, which onnxruntime's %s "
            "packer cannot store; using block_size %d instead (set export_onnx.block_size to choose)",
            cfg.block_size,
            split,
            cfg.algorithm,
            choice,
        )
        return cfg.model_copy(update={"block_size": choice})
    chosen = {"algorithm", "symmetric"} & cfg.model_fields_set
    if chosen:
        raise ExportError(
            f"no block size in {list(BLOCK_SIZES)} splits {split} into an even number of blocks, which the "
            f"{cfg.algorithm} packer needs; unset {', '.join(sorted(chosen))} or use algorithm rtn with symmetric true."
        )
    log.warning(
        "export_onnx: no block size in %s splits %s into an even number of blocks, which the %s packer needs; "
        "using symmetric rtn (no zero points) at block_size %d instead",
        list(BLOCK_SIZES),
        split,
        cfg.algorithm,
        cfg.block_size,
    )
    return cfg.model_copy(update={"algorithm": "rtn", "symmetric": True})


def accuracy_level(cfg: ExportOnnxConfig) -> tuple[int | None, str]:
    """(MatMulNBits compute type, why): the configured one, else int8 (4) on cpu and webgpu and the builder's default
    (None) on cuda and dml. int8 on every CPU because its slowest case wins clearly: measured on a 2-core AVX2-only
    AMD EPYC (no VNNI), the stand-in's int4 export decodes 75 tokens/s with int8 compute and 3.7 with fp32 compute
    (accuracy_level 1), for 0.5 % more perplexity (docs/onnx.md); VNNI, AMX-INT8 and Arm dot products only widen it.
    The export runs on its target's CPU, not necessarily this one, so this CPU's flags do not decide."""
    if cfg.accuracy_level is not None:
        return cfg.accuracy_level, "set by export_onnx.accuracy_level"
    if cfg.target in ("cpu", "webgpu"):
        return 4, "int8 compute: 20x the decode speed of fp32 compute on an AVX2-only CPU, for +0.5 % perplexity"
    return None, f"the builder's default for {cfg.target}"


def builder_options(cfg: ExportOnnxConfig) -> dict[str, str]:
    """The builder's extra_options (0.18 names: block_size, is_symmetric, accuracy_level, algo_config; the older
    int4_-prefixed names are documented as aliases but ignored by 0.18's code, so they must not be used)."""
    if cfg.precision != "int4":
        return {}
    options = {
        "block_size": str(cfg.block_size),
        "is_symmetric": str(cfg.symmetric).lower(),
        "algo_config": cfg.algorithm,
    }
    level, _ = accuracy_level(cfg)
    if level is not None:
        options["accuracy_level"] = str(level)
    if cfg.lm_head == "float":
        options["nodes_to_exclude"] = "/lm_head/MatMul"
    elif cfg.lm_head == "int8":
        options["matmul_mixed_precision"] = "last_matmul:int8"
    return options


def read_gptq_config(gptq_dir: Path) -> dict[str, Any]:
    """The checkpoint's quantization settings; only 4-bit GPTQ (v1 format) converts to int4 MatMulNBits."""
    qfile, cfile = gptq_dir / "quantize_config.json", gptq_dir / "config.json"
    quant = json.loads(qfile.read_text()) if qfile.is_file() else None
    if quant is None and cfile.is_file():
        quant = json.loads(cfile.read_text()).get("quantization_config")
    if not quant:
        raise ExportError(
            f"{gptq_dir}: no quantize_config.json or quantization_config in config.json; pass the output "
            "folder of `tulu-quant quantize`."
        )
    method = quant.get("quant_method", "gptq")
    fmt = quant.get("checkpoint_format", quant.get("format", "gptq"))
    if method != "gptq" or fmt != "gptq" or int(quant.get("bits", 0)) != 4:
        raise ExportError(
            f"{gptq_dir}: a {quant.get('bits')}-bit {method} checkpoint in format {fmt}; the builder converts "
            "4-bit GPTQ checkpoints in the gptq (v1) format only."
        )
    return quant


def check_same_model(
    model_config: dict[str, Any], gptq_config: dict[str, Any], model_dir: Path, gptq_dir: Path
) -> None:
    keys = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
    )
    differ = [
        f"{k} ({model_config.get(k)} vs {gptq_config.get(k)})"
        for k in keys
        if model_config.get(k) != gptq_config.get(k)
    ]
    if differ:
        raise ExportError(
            f"{gptq_dir} was not quantized from {model_dir}: {', '.join(differ)} differ; pass the GPTQ "
            "checkpoint made from this model."
        )


def expected_attention(precision: str, target: str) -> str:
    """The builder's attention operator: GroupQueryAttention (fused rotary, KV cache), except fp32 on CUDA, which
    GroupQueryAttention does not support (ONNX Attention with separate RotaryEmbedding nodes)."""
    return "Attention" if (precision, target) == ("fp32", "cuda") else "GroupQueryAttention"


def expected_io_dtype(precision: str, target: str) -> str:
    """The dtype of the model's inputs/outputs the builder picks: fp32 for fp32, and for int4 on cpu; fp16 otherwise."""
    return "float32" if precision == "fp32" or (precision == "int4" and target == "cpu") else "float16"


def graph_summary(model_path: Path) -> dict[str, Any]:
    """Operator counts, MatMulNBits attributes and the logits dtype, read from the graph without its weights."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    ops: dict[str, int] = {}
    nbits: dict[str, set] = {"bits": set(), "block_size": set(), "accuracy_level": set()}
    weights = {init.name for init in model.graph.initializer}
    float_weight_matmuls = []
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            for attr in node.attribute:
                if attr.name in nbits:
                    nbits[attr.name].add(onnx.helper.get_attribute_value(attr))
        elif node.op_type == "MatMul" and any(name in weights for name in node.input):
            float_weight_matmuls.append(node.name)
    logits = next(o for o in model.graph.output if o.name == "logits")
    return {
        "ops": dict(sorted(ops.items())),
        "quantized": {k: sorted(v) for k, v in nbits.items()},
        "float_weight_matmuls": float_weight_matmuls,
        "io_dtype": ELEM_TYPES.get(logits.type.tensor_type.elem_type, str(logits.type.tensor_type.elem_type)),
    }


def check_graph(graph: dict[str, Any], cfg: ExportOnnxConfig, layers: int) -> list[str]:
    """What is wrong with the exported graph for this request (empty: as expected)."""
    problems = []
    ops = graph["ops"]
    attention = expected_attention(cfg.precision, cfg.target)
    if ops.get(attention, 0) != layers:
        problems.append(f"{ops.get(attention, 0)} {attention} nodes for {layers} layers")
    if graph["io_dtype"] != expected_io_dtype(cfg.precision, cfg.target):
        problems.append(f"logits are {graph['io_dtype']}, expected {expected_io_dtype(cfg.precision, cfg.target)}")
    if cfg.precision == "int4":
        if ops.get("MatMulNBits", 0) < 4 * layers:  # q/k/v (fused or not), o, gate/up (fused or not), down per layer
            problems.append(f"only {ops.get('MatMulNBits', 0)} MatMulNBits nodes for {layers} layers")
        allowed = ["/lm_head/MatMul"] if cfg.lm_head == "float" else []
        if [name for name in graph["float_weight_matmuls"] if name not in allowed]:
            problems.append(f"float MatMuls left: {graph['float_weight_matmuls'][:3]}")
    elif ops.get("MatMulNBits", 0):
        problems.append(f"{ops['MatMulNBits']} MatMulNBits nodes in a {cfg.precision} export")
    return problems


# ------------------------------------------------------------------------------------------------------ the builder


def build_onnx(source: Path, out: Path, precision: str, target: str, options: dict[str, str], log_file: Path) -> None:
    """The one call into onnxruntime-genai's model builder, in-process, its console output captured into log_file.

    `source` is the fp16 model folder or the GPTQ checkpoint (the builder reads a quantization_config from the folder's
    config.json and then keeps the quantized weights).
    """
    try:
        from onnxruntime_genai.models.builder import create_model, parse_extra_options
    except ImportError as err:
        raise MissingLibrary(
            f"the ONNX export needs onnxruntime-genai >= 0.18 with its model builder ({err}); "
            "pip install 'onnxruntime-genai>=0.18' onnx-ir."
        ) from None

    cache = out / ".builder-cache"
    pairs = [f"{key}={value}" for key, value in options.items()]
    log.debug("builder: -i %s -o %s -p %s -e %s --extra_options %s", source, out, precision, target, " ".join(pairs))
    try:
        with captured(log_file):
            extra = parse_extra_options(None, str(source), str(out), precision, target, str(cache), pairs)
            create_model(None, str(source), str(out), precision, target, str(cache), **extra)
    except Exception as err:  # the builder raises ValueError, NotImplementedError, KeyError ... on inputs it refuses
        raise ExportError(
            f"the onnxruntime-genai builder failed on {source} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300] if str(err) else ''}); its output is in {log_file}."
        ) from err
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def finish_folder(out: Path, model_dir: Path, chat_format: str) -> None:
    """The model's own HF tokenizer files (token ids identical to the torch backends) and our chat template, which
    transformers reads from tokenizer_config.json and onnxruntime-genai from chat_template.jinja."""
    from ..chat import install_template

    copy_if_present(model_dir, out, TOKENIZER_FILES)
    install_template(out, chat_format)
    template = out / "chat_template.jinja"
    config_path = out / "tokenizer_config.json"
    if template.is_file() and config_path.is_file():
        config = json.loads(config_path.read_text())
        config.setdefault("chat_template", template.read_text())
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


# ------------------------------------------------------------------------------------------------------ verification

VERIFY_PROMPT = "Name three things people often do at a market."


def verification_ids(tokenizer, text: str, tokens: int) -> list[int]:
    """The first `tokens` model inputs of the text, laid out as a perplexity window (BOS first when the model
    uses one)."""
    from ..eval.perplexity import bos_id_of, make_windows, tokenize_documents

    windows = make_windows(tokenize_documents(tokenizer, [text]), tokens, bos_id_of(tokenizer), max_windows=1)
    if not windows.inputs:
        raise ExportError(f"the verification text has fewer than {tokens} tokens; lower export_onnx.verify_tokens.")
    return windows.inputs[0]


def compare_logits(reference, export, ids: list[int]) -> dict[str, float]:
    """Export vs reference logits [T, vocab] on the same ids: worst absolute and relative difference, top-1 agreement
    and KL(P_ref || P_export) of the next-token distributions, perplexity of the window under each."""
    import numpy as np

    from ..eval.perplexity import kl_per_token, log_softmax, token_nll

    diff = float(np.abs(export - reference).max())
    kl = kl_per_token(log_softmax(reference[:-1]), export[:-1])
    return {
        "tokens": len(ids),
        "max_abs_diff": diff,
        "max_rel_diff": diff / float(np.abs(reference).max()),
        "top1_agreement": float(100.0 * (export.argmax(-1) == reference.argmax(-1)).mean()),
        "kl_mean": float(kl.mean()),
        "kl_p99": float(np.percentile(kl, 99)),
        "ppl_reference": float(np.exp(token_nll(reference, ids).mean())),
        "ppl_export": float(np.exp(token_nll(export, ids).mean())),
    }


def verification_failure(metrics: dict[str, float], cfg: ExportOnnxConfig) -> str | None:
    if cfg.precision in ("fp32", "fp16"):
        tolerance = cfg.fp32_tolerance if cfg.precision == "fp32" else cfg.fp16_tolerance
        if not metrics["max_rel_diff"] <= tolerance:
            return (
                f"its logits differ from the float32 torch model by {metrics['max_rel_diff']:.3g} of their range "
                f"(tolerance {tolerance:g})"
            )
    elif not metrics["top1_agreement"] >= cfg.min_top1_agreement:
        return (
            f"its top-1 agreement with the fp16 model is {metrics['top1_agreement']:.1f}% (floor "
            f"{cfg.min_top1_agreement:g}%, KL {metrics['kl_mean']:.3g})"
        )
    return None


def verify_export(
    folder: Path, model_dir: Path, cfg: ExportOnnxConfig, chat_format: str, text: str | None, progress: Progress = NULL
) -> dict[str, Any]:
    """Score the same tokens with the float32 torch model and the export (one model in memory at a time), generate
    greedily with both, and fail on a broken export."""
    import gc

    from ..backends.onnx_backend import OnnxBackend, genai_tokenizer_agrees
    from ..backends.torch_backend import TorchBackend
    from ..chat import render
    from ..config import GenerationSettings

    settings = GenerationSettings(max_new_tokens=cfg.verify_new_tokens)
    with progress.task("verify export", total=4) as advance:
        reference = TorchBackend(model_dir, device=cfg.verify_device, dtype="float32")
        text = text if text is not None else verification_text(cfg.verify_source, cfg.verify_tokens)
        ids = verification_ids(reference.tokenizer, text, cfg.verify_tokens)
        prompt = reference.tokenizer(
            render([{"role": "user", "content": VERIFY_PROMPT}], reference.tokenizer, chat_format)
        ).input_ids
        ref_logits, ref_greedy = reference.logits(ids), reference.generate(prompt, settings)
        del reference
        gc.collect()
        advance(2)
        export = OnnxBackend(folder, threads=cfg.threads)
        metrics = compare_logits(ref_logits, export.logits(ids), ids)
        greedy = export.generate(prompt, settings)
        advance(2)
    same = next((i for i, (a, b) in enumerate(zip(greedy, ref_greedy)) if a != b), min(len(greedy), len(ref_greedy)))
    record = {
        **metrics,
        "generated_tokens": len(greedy),
        "greedy_prefix_matching_torch": same,
        "sample": export.tokenizer.decode(greedy, skip_special_tokens=True),
        "genai_tokenizer_agrees": genai_tokenizer_agrees(export, text[:2000]),
    }
    failure = verification_failure(metrics, cfg)
    if failure is None and not greedy:
        failure = "its greedy generation produced no token"
    if failure:
        raise ExportError(f"{cfg.precision} export failed verification: {failure}; see the builder output in the log.")
    return record


def verification_text(source: str, tokens: int) -> str:
    """Enough of the source's evaluation documents for `tokens` tokens (about 4 characters per token; 8 for margin)."""
    from ..data import get_source

    parts, size = [], 0
    for document in get_source(source).documents("evaluation"):
        parts.append(document)
        size += len(document)
        if size > 8 * tokens:
            break
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------------ the stage


def run(
    cfg: RunConfig,
    model_dir: Path,
    out: Path,
    gptq_dir: Path | None = None,
    force: bool = False,
    progress: Progress = NULL,
    log_file: Path | None = None,
    verify_text: str | None = None,
) -> ExportResult:
    """Export model_dir (or, with gptq_dir, that GPTQ checkpoint of it) to out as cfg.export_onnx says, with the chat
    template of cfg.model.chat_format. verify_text: the text to score (None: the evaluation split of
    export_onnx.verify_source). The builder's console output goes to log_file (None: OUT.export.log beside out)."""
    from transformers import AutoTokenizer

    from ..chat import resolve_format

    model_dir, out = Path(model_dir), Path(out)
    gptq_dir = Path(gptq_dir) if gptq_dir is not None else None
    requested_format = cfg.model.chat_format
    cfg = cfg.export_onnx.model_copy(update={"from_gptq": gptq_dir is not None})
    check_request(cfg, gptq_dir is not None)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir}: no config.json; pass the recovered fp16 model folder as --model.")
    model_config = json.loads((model_dir / "config.json").read_text())
    if gptq_dir is not None:
        read_gptq_config(gptq_dir)
        check_same_model(model_config, json.loads((gptq_dir / "config.json").read_text()), model_dir, gptq_dir)
    cfg = fit_block_size(cfg, model_config, gptq_dir is not None)
    refuse_existing(out, force)
    chat_format = resolve_format(requested_format, AutoTokenizer.from_pretrained(model_dir))
    options = builder_options(cfg)
    log_file = log_file or out.with_name(out.name + ".export.log")
    with measure() as usage:
        with atomic_dir(out, force) as tmp:
            with progress.task(f"export {cfg.precision} {cfg.target}", total=None):
                build_onnx(gptq_dir or model_dir, tmp, cfg.precision, cfg.target, options, log_file)
            finish_folder(tmp, model_dir, chat_format)
            graph = graph_summary(tmp / "model.onnx")
            problems = check_graph(graph, cfg, int(model_config["num_hidden_layers"]))
            if problems:
                raise ExportError(
                    f"the exported graph is not what a {cfg.precision} {cfg.target} export should be: "
                    f"{'; '.join(problems)}; see {log_file}."
                )
            skip = "verify is off" if not cfg.verify else runnable_here(cfg.target)
            if skip:
                if cfg.verify:
                    log.warning("%s: not verified (%s); verify it where that execution provider exists", out, skip)
                verification: dict[str, Any] = {"skipped": skip}
            else:
                verification = verify_export(tmp, model_dir, cfg, chat_format, verify_text, progress)
                log.info(
                    "verified %s: %s",
                    out,
                    ", ".join(f"{k} {verification[k]:.4g}" for k in ("max_rel_diff", "top1_agreement", "kl_mean")),
                )
            onnx_bytes = sum((tmp / f).stat().st_size for f in ONNX_FILES if (tmp / f).is_file())
            result = ExportResult(
                out,
                cfg.precision,
                cfg.target,
                "gptq" if gptq_dir else "fp16",
                options,
                graph,
                onnx_bytes,
                dir_size(tmp),
                verification,
                inputs={"model": str(model_dir.resolve()), **({"gptq": str(gptq_dir.resolve())} if gptq_dir else {})},
            )
            _write_record(tmp / RECORD, result, cfg)
    result.seconds, result.peak_rss = usage.seconds, usage.peak_rss
    _write_record(out / RECORD, result, cfg)
    return result


def _write_record(path: Path, result: ExportResult, cfg: ExportOnnxConfig) -> None:
    from ..manifest import library_versions

    record = asdict(result)
    record["out"] = str(result.out)
    record["config"] = cfg.model_dump(mode="json")
    if cfg.precision == "int4":
        record["accuracy_level"] = dict(zip(("value", "reason"), accuracy_level(cfg)))
    record["versions"] = library_versions()
    path.write_text(json.dumps(record, indent=2))


# ------------------------------------------------------------------------------------------------------ pipeline


def step(cfg: RunConfig, ctx: Context) -> Step:
    """The pipeline's export_onnx: RUN_DIR/recovered (int4 from RUN_DIR/gptq with from_gptq) -> RUN_DIR/onnx."""
    out = ctx.out(STAGE)
    export = cfg.export_onnx
    model = ctx.produced("recover")
    gptq = None
    if export.from_gptq:
        gptq = ctx.recorded("quantize")
        if gptq is None:
            raise StageNotReady(
                f"{ctx.run_dir}: export_onnx.from_gptq needs the quantize stage's output; add quantize "
                "to the config's stages or set export_onnx.from_gptq: false."
            )

    def work() -> dict[str, Any]:
        result = run(cfg, model, out, gptq, force=True, progress=ctx.progress, log_file=ctx.log_file)
        return {
            "precision": result.precision,
            "target": result.target,
            "source": result.source,
            "onnx_bytes": result.onnx_bytes,
            "verification": result.verification,
        }

    def describe(summary: dict[str, Any]) -> str:
        v = summary["verification"]
        shown = ", ".join(f"{k} {v[k]:.3g}" for k in ("max_rel_diff", "top1_agreement", "kl_mean") if k in v)
        return (
            f"{summary['precision']} {summary['target']} from {summary['source']}, {human_bytes(summary['onnx_bytes'])}"
            + (f", {shown}" if shown else "")
        )

    inputs = [model] + ([gptq] if gptq is not None else [])
    return Step(
        STAGE.name,
        inputs,
        [out],
        {"model": cfg.model.name, "chat_format": cfg.model.chat_format, **export.model_dump(mode="json")},
        work,
        describe,
    )
