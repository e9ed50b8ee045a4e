"""The command line (tulu_quant/cli.py): every flag is a config setting, --set reaches any setting, one log-file rule,
user errors are one sentence and exit 2, bugs keep their traceback, and start-up imports no heavy library."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tulu_quant import cli, stages
from tulu_quant.config import ConfigError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """The cache (where commands log by default) in tmp_path; the root logger's handlers put back after main()."""
    monkeypatch.setenv("TULU_QUANT_CACHE", str(tmp_path / "cache"))
    # these tests wire flags to faked stages with made-up paths; the folder checks are tests/unit/test_bad_input.py's
    monkeypatch.setattr(cli, "check_model_arguments", lambda args: None)
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = saved, level


class Done:
    def __init__(self, text="done"):
        self.text = text

    def summary(self):
        return self.text


def capture(monkeypatch, module, name="run"):
    """Replace a stage's function by one that records its arguments; returns the record."""
    seen = {}

    def fake(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return Done()

    monkeypatch.setattr(module, name, fake)
    return seen


def test_every_command_has_help_naming_each_flags_config_key(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        for spec in cli.SETTINGS[name].split():
            assert f"[{spec.partition('=')[0]}" in text, (name, spec)  # the help names the key --set and YAML use


def test_quantize_flags_reach_the_quantize_section(monkeypatch, tmp_path):
    seen = capture(monkeypatch, stages.load("quantize"))
    flags = ["--group-size", "32", "--no-sym", "--mse", "2.4", "--gptaq", "0.25", "--batch-size", "4"]
    flags += ["--no-true-sequential", "--chat-format", "tokenizer", "--compute-dtype", "float32"]
    code = cli.main(["-q", "quantize", "--model", "m", "--out", str(tmp_path / "q"), "--calib", "c", *flags])
    cfg, model, out, calib = seen["args"][:4]
    assert code == 0 and (model, out, calib) == (Path("m"), tmp_path / "q", Path("c"))
    q = cfg.quantize
    assert (q.group_size, q.sym, q.mse, q.gptaq_alpha, q.batch_size, q.true_sequential) == (
        32,
        False,
        2.4,
        0.25,
        4,
        False,
    )
    assert q.compute_dtype == "float32" and cfg.model.chat_format == "tokenizer"


def test_set_reaches_any_setting_and_wins_over_flags_and_the_config(monkeypatch, tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"model": {"name": "m"}, "quantize": {"bits": 8, "mse": 1.0}}))
    seen = capture(monkeypatch, stages.load("quantize"))
    argv = ["quantize", "--config", str(run_yaml), "--model", "m", "--out", "o", "--bits", "3"]
    assert (
        cli.main([*argv, "--set", "quantize.mse=2.4", "--set", "calibrate.seq_len=512", "--set", "quantize.bits=2"])
        == 0
    )
    cfg = seen["args"][0]
    assert (cfg.quantize.bits, cfg.quantize.mse, cfg.calibrate.seq_len, cfg.model.name) == (2, 2.4, 512, "m")
    assert cli.main([*argv[:-2]]) == 0 and seen["args"][0].quantize.bits == 8  # the config's value without the flag


def test_a_variant_flag_replaces_the_configs_quantize_section(monkeypatch, tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"quantize": {"group_size": 64, "mse": 2.4}}))
    seen = capture(monkeypatch, stages.load("quantize"))
    argv = ["quantize", "--config", str(run_yaml), "--model", "m", "--out", "o", "--variant", "gptq-4bit-32g-actorder"]
    assert cli.main(argv) == 0
    q = seen["args"][0].quantize
    assert (q.variant, q.group_size, q.desc_act, q.mse) == ("gptq-4bit-32g-actorder", 32, True, 0.0)


def test_bad_settings_are_one_sentence_and_exit_2(tmp_path, capfd):
    base = ["quantize", "--model", "m", "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--set", "quantize.bitz=3"]) == 2
    err = capfd.readouterr().err
    assert "quantize has no setting 'bitz'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli.main([*base, "--set", "quantize.group_size=48"]) == 2
    assert "command line: key 'quantize.group_size' = 48 is invalid" in capfd.readouterr().err
    assert cli.main([*base, "--set", "bits"]) == 2 and "write KEY=VALUE" in capfd.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*base, "--bits", "5"])  # a choice argparse knows from the Literal field
    assert not (tmp_path / "o").exists()


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a stage")

    monkeypatch.setattr(stages.load("calibrate"), "run", broken)
    with pytest.raises(RuntimeError, match="a bug in a stage"):
        cli.main(["calibrate", "--model", "m", "--out", "o"])


def test_one_log_file_rule_for_every_command(monkeypatch, tmp_path):
    seen = capture(monkeypatch, stages.load("validate"))
    assert cli.main(["validate", "--reference", "r", "--candidate", "c", "--report", str(tmp_path / "rep")]) == 0
    assert seen["args"][-1] == tmp_path / "cache" / "logs" / "validate.log"
    log_file = tmp_path / "mine.log"
    assert cli.main(["--log-file", str(log_file), "validate", "--reference", "r", "--report", "x"]) == 0
    assert seen["args"][-1] == log_file and log_file.is_file()  # validate and export-onnx honour --log-file
    seen = capture(monkeypatch, stages.load("export_onnx"))
    assert cli.main(["--log-file", str(log_file), "export-onnx", "--model", "m", "--out", "o"]) == 0
    assert seen["args"][-1] == log_file
    import tulu_quant.pipeline as pipeline
    import tulu_quant.summary as summary

    monkeypatch.setattr(
        pipeline, "run_pipeline", lambda cfg, progress, only, start, log_file: seen.update(log=log_file)
    )
    monkeypatch.setattr(summary, "print_run_summary", lambda *a: None)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run")}))
    assert cli.main(["run", "--config", str(run_yaml)]) == 0
    assert seen["log"] == tmp_path / "run" / "logs" / "run.log"


def test_recover_calibrate_validate_export_and_publish_flags(monkeypatch, tmp_path):
    seen = capture(monkeypatch, stages.load("recover"))
    argv = ["recover", "--base", "b", "--diff", "d", "--out", "o", "--dtype", "float32", "--verify"]
    assert cli.main([*argv, "--skip-check", "keys", "--skip-check", "config", "--max-shard-size", "1GB"]) == 0
    cfg = seen["args"][0]
    assert (cfg.model.base, cfg.model.diff, cfg.recover.dtype, cfg.recover.verify) == (
        Path("b"),
        Path("d"),
        "float32",
        True,
    )
    assert cfg.recover.skip_checks == ["keys", "config"] and cfg.recover.max_shard_size == "1GB"

    seen = capture(monkeypatch, stages.load("calibrate"))
    argv = ["calibrate", "--model", "m", "--out", "o", "--source", "wiki=2", "--source", "file:my.jsonl@calibration"]
    assert cli.main([*argv, "--samples", "8", "--eval", "wiki:evaluation"]) == 0
    cfg = seen["args"][0].calibrate
    assert [(s.source, s.split, s.weight) for s in cfg.mix] == [
        ("wiki", "calibration", 2.0),
        ("file:my.jsonl", "calibration", 1.0),
    ]
    assert cfg.num_samples == 8 and cfg.evaluation == ["wiki:evaluation"]

    seen = capture(monkeypatch, stages.load("validate"))
    argv = [
        "validate",
        "--reference",
        "r",
        "--candidate",
        "a",
        "--candidate",
        "b",
        "--report",
        "rep",
        "--suite",
        "full",
    ]
    assert cli.main([*argv, "--calibration", "tulu-sft:calibration", "--context-length", "256"]) == 0
    cfg, reference, candidates = seen["args"][:3]
    assert reference == Path("r") and candidates == [Path("a"), Path("b")]
    assert (cfg.validate_.suite, cfg.validate_.context_length, cfg.validate_.calibration) == (
        "full",
        256,
        ["tulu-sft:calibration"],
    )
    data = ["--data-dir", "d", "--data", "tydiqa=t/tydiqa.jsonl", "--data", "bbh=b", "--judge-url", "http://j/v1"]
    assert cli.main([*argv, *data, "--judge-model", "gpt-4"]) == 0
    v = seen["args"][0].validate_
    assert (v.data_dir, v.data, v.judge_url) == (
        Path("d"),
        {"tydiqa": Path("t/tydiqa.jsonl"), "bbh": Path("b")},
        "http://j/v1",
    )
    assert cli.main([*argv, "--data", "tydi=x"]) == 2  # not a data set's name: a config error
    served = ["--engine", "vllm", "--endpoint", "http://gpu:8000/v1", "--endpoint", "reference=http://other/v1"]
    assert cli.main([*argv, *served]) == 0
    v = seen["args"][0].validate_
    assert v.engine == "vllm" and v.endpoints == {"candidate": "http://gpu:8000/v1", "reference": "http://other/v1"}
    with pytest.raises(SystemExit):
        cli.main(["validate"])  # --reference and --report are required
    assert cli.main([*argv, "--calibration", "no-split"]) == 2  # not SOURCE:SPLIT: a config error

    seen = capture(monkeypatch, stages.load("export_onnx"))
    assert (
        cli.main(["export-onnx", "--model", "m", "--out", "o", "--from-gptq", "g", "--asymmetric", "--no-verify"]) == 0
    )
    cfg, model, out, gptq = seen["args"][:4]
    assert gptq == Path("g") and cfg.export_onnx.symmetric is False and cfg.export_onnx.verify is False

    seen = capture(monkeypatch, stages.load("publish"))
    assert cli.main(["publish", "--model", "q", "--out", "p", "--repo-id", "me/x", "--push", "--private"]) == 0
    cfg = seen["args"][0]
    assert (cfg.publish.repo_id, cfg.publish.push, cfg.publish.private) == ("me/x", True, True)
    assert cfg.model.hub_base_model == "allenai/tulu-13b"  # with no --config the card describes Tulu 13B


def test_user_errors_of_real_commands_exit_2_without_writing(tmp_path, capfd):
    from tiny import tiny_llama_config, tiny_state, write_checkpoint

    config = tiny_llama_config()
    base = write_checkpoint(tmp_path / "base", tiny_state(config), config)
    diff = write_checkpoint(
        tmp_path / "diff", tiny_state(tiny_llama_config(vocab_size=97)), tiny_llama_config(vocab_size=97)
    )
    code = cli.main(["recover", "--base", str(diff), "--diff", str(base), "--out", str(tmp_path / "out")])
    err = capfd.readouterr().err
    assert code == 2 and "smaller vocabulary" in err and "Traceback" not in err
    assert cli.main(["recover", "--diff", str(diff), "--out", str(tmp_path / "out")]) == 2
    assert "model.base is not set; pass --base" in capfd.readouterr().err
    out = str(tmp_path / "o")
    assert cli.main(["export-onnx", "--model", str(base), "--out", out, "--precision", "fp16", "--target", "cpu"]) == 2
    assert "precision fp16 on target cpu is not supported" in capfd.readouterr().err
    assert (
        cli.main(["export-onnx", "--model", str(base), "--out", out, "--precision", "fp32", "--block-size", "64"]) == 2
    )
    assert "block_size only apply to int4" in capfd.readouterr().err
    assert cli.main(["demo"]) == 2 and "pass --model" in capfd.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_plan_prints_the_model_and_the_family_table(capfd):
    assert cli.main(["plan", "--model", "13B", "--gpu-mem", "10GiB", "--bits", "3", "--batch", "2"]) == 0
    text = capfd.readouterr().err
    assert "LLaMA-1 13B" in text and "| 65B |" in text and "10GiB (--gpu-mem)" in text
    assert "serve 3-bit g128 at context 2048 x batch 2" in text
    assert cli.main(["plan", "--model", "13B", "--gpu-mem=-3GB"]) == 2  # a config error: not a positive size


def test_demo_flags_and_config(monkeypatch, tmp_path):
    from tulu_quant import demo
    from tulu_quant.config import DemoConfig

    calls = []

    class FakeApp:
        @staticmethod
        def main(model, compare, cfg):
            calls.append((model, compare, cfg))

    monkeypatch.setattr(demo, "load_app", lambda: FakeApp)
    assert cli.main(["demo", "--model", "runs/x", "--port", "8123"]) == 0
    assert calls[-1] == (Path("runs/x"), None, DemoConfig(port=8123))
    assert cli.main(["demo", "--model", "m", "--compare", "f", "--share", "--host", "0.0.0.0"]) == 0
    assert calls[-1][1] == Path("f") and calls[-1][2].share and calls[-1][2].host == "0.0.0.0"
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "demo": {"port": 9000}}))
    assert cli.main(["demo", "--config", str(run_yaml)]) == 0
    assert calls[-1][0] == tmp_path / "run" and calls[-1][2].port == 9000  # the config's run_dir and demo: section


def test_generate_prints_the_reply_then_the_speed(tmp_path, capfd):
    from tiny import bpe_tokenizer, save_tiny_hf

    model = save_tiny_hf(tmp_path / "tiny", bpe_tokenizer("the quick brown fox jumps over the lazy dog " * 20))
    argv = ["generate", "--model", str(model), "--prompt", "Hello", "--max-new-tokens", "6", "--threads", "2"]
    assert cli.main(argv) == 0
    out = capfd.readouterr()
    assert out.out.endswith("\n") and "time to first token" in out.err and "tulu format" in out.err


def test_sweep_without_variants_is_a_config_error(tmp_path, capfd):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "stages": []}))
    assert cli.main(["sweep", "--config", str(run_yaml)]) == 2
    assert "no variants to sweep" in capfd.readouterr().err


def test_start_up_imports_no_heavy_library():
    code = "import sys; from tulu_quant import cli; cli.build_parser(); print(sorted(m for m in ('torch', "
    code += "'transformers', 'gptqmodel', 'onnxruntime', 'onnxruntime_genai', 'gradio', 'llama_cpp', 'gguf') "
    code += "if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.replace("'", '"')) == []


def test_config_errors_name_the_flag_source():
    from tulu_quant.config import load_config

    with pytest.raises(ConfigError, match="^command line: key 'quantize.bits' = 5"):
        load_config(None, {"quantize.bits": 5})
