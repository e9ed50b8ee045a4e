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
    from .progress import add_log_file
    from .summary import print_run_summary

    overrides = {"model.base": args.base, "model.diff": args.diff, "run_dir": args.run_dir, "quantize.variant": args.variant}
    cfg = load_config(args.config, {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
    log_file = cfg.run_dir / "logs" / "run.log"
    add_log_file(log_file)
    progress = _progress(args)
    log.info("run %s -> %s (log: %s)", args.config, cfg.run_dir, log_file)
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
    p.add_argument("--verify", action="store_true", default=None, help="score a built-in text and generate after writing")
    p.add_argument("--skip-check", action="append", dest="skip_checks",
                   choices=["keys", "config", "diff-scale", "finite", "verify"], help="expert override (repeatable)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_recover)


def _cmd_recover(args) -> int:
    from .config import RecoverConfig, build
    from .stages import recover

    values = {"dtype": args.dtype, "max_shard_size": args.max_shard_size, "verify": args.verify, "skip_checks": args.skip_checks}
    cfg = build(RecoverConfig, {k: v for k, v in values.items() if v is not None}, "command line")
    result = recover.run(args.base, args.diff, args.out, cfg, force=args.force, progress=_progress(args))
    if result.verify:
        log.info("verify: perplexity %.2f on the built-in text; chat sample: %r", result.verify["perplexity"],
                 result.verify["sample"])  # fmt: skip
    log.info(result.summary())
    return 0


# ------------------------------------------------------------------------------------------------------------ main

COMMANDS = [_add_run, _add_recover]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tulu-quant", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on the terminal")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .progress import setup_logging

    setup_logging(verbose=args.verbose)
    try:
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
