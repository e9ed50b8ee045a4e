"""publish: the folder, its model card (measured numbers only), SHA256SUMS, and the upload's failure modes."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest
from tiny import run_config

from tulu_quant.config import ModelConfig, PublishConfig
from tulu_quant.stages import publish
from tulu_quant.stages.publish import PublishError

MODEL = ModelConfig(name="tulu-13b", base="/b", diff="/d", chat_format="tulu")


def publish_run(model_dir, report, out, model=MODEL, cfg=None, variant=None, **kw):
    """publish.run with `model` as the model: section, cfg as publish: and the quantize variant's name."""
    run_cfg = run_config(model=model, publish=cfg or PublishConfig(), quantize={"variant": variant})
    return publish.run(run_cfg, model_dir, report, out, **kw)


def metric(key, label, value, unit="points", skipped=None):
    return {"key": key, "label": label, "unit": unit, "value": value, "skipped": skipped, "ci": None}


@pytest.fixture
def artifacts(tmp_path):
    model = tmp_path / "gptq"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "quantize_config.json").write_text(
        json.dumps(
            {
                "bits": 4,
                "group_size": 128,
                "desc_act": False,
                "sym": True,
                "checkpoint_format": "gptq",
                "meta": {  # as GPTQModel 7.6
                    "damp_percent": 0.01,
                    "mse": 2.4,
                    "gptaq": None,
                },
            }
        )
    )
    (model / "model.safetensors").write_bytes(b"\x00" * 1000)
    (model / "tokenizer_config.json").write_text("{}")
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    report = {
        "protocol": {"suite_name": "quick", "context_length": 2048},
        "reference": {
            "metrics": {
                "ppl.wiki": metric("ppl.wiki", "wiki perplexity", 5.0912, "ppl"),
                "mmlu_0shot": metric("mmlu_0shot", "MMLU 0-shot", 49.25),
            }
        },
        "candidates": [
            {
                "path": str(model),
                "name": "gptq",
                "metrics": {
                    "ppl.wiki": metric("ppl.wiki", "wiki perplexity", 5.2047, "ppl"),
                    "mmlu_0shot": metric("mmlu_0shot", "MMLU 0-shot", 48.75),
                    "gsm_cot": metric("gsm_cot", "GSM CoT", None, skipped="gsm8k data unavailable offline"),
                },
                "deltas": {
                    "ppl.wiki": {
                        "delta": 0.1135,
                        "delta_pct": 2.23,
                        "ci": [1.9, 2.6],
                        "ci_unit": "%",
                        "within_noise": False,
                    },
                    "mmlu_0shot": {
                        "delta": -0.5,
                        "delta_pct": None,
                        "ci": [-1.4, 0.4],
                        "ci_unit": "points",
                        "within_noise": True,
                    },
                },
                "gates": [{"metric": "ppl.wiki", "status": "pass"}],
            }
        ],
    }
    (report_dir / "report.json").write_text(json.dumps(report))
    return model, report_dir


def test_folder_card_and_sums(tmp_path, artifacts):
    model, report = artifacts
    result = publish_run(
        model, report, tmp_path / "pub", MODEL, PublishConfig(repo_id="me/tulu-13b-GPTQ"), variant="gptq-4bit-128g"
    )
    out = tmp_path / "pub"
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: allenai/tulu-13b\n")
    assert "license: other" in card and "license_name: ai2-impact-license-low-risk" in card
    assert "LLaMA" in card and "ImpACT" in card
    for measured in ("5.091", "5.205", "49.2", "48.8", "+2.23 %", "within noise"):  # numbers from the report only
        assert measured in card, measured
    assert "GSM CoT: not measured (gsm8k data unavailable offline)" in card
    assert "<|user|>\nYour message here!\n<|assistant|>\n" in card
    assert 'revision="gptq-4bit-128g"' in card and "--quantization gptq" in card
    assert "| vLLM 0.32, CUDA (compute capability 7.5+) | yes |" in card
    assert "| vLLM 0.32, CPU with AVX2 only | no: this CPU lacks AVX512" in card
    assert (
        "- Settings: bits 4, group_size 128, desc_act False, sym True, damp_percent 0.01, mse 2.4, checkpoint_format"
        in card
    )
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == set(result.files) - {"SHA256SUMS"}
    for rel, digest in sums.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert not result.pushed and result.revision == "gptq-4bit-128g"
    assert result.metrics["mmlu_0shot"] == 48.75


def test_card_says_how_the_calibration_forward_passes_ran(tmp_path, artifacts):
    model, report = artifacts
    record = {
        "device": "cpu",
        "compute_dtype": "float32",
        "compute_dtype_reason": "AMD EPYC has no native BF16 (AVX512-BF16, AMX or Arm BF16; torch capability AVX2)",
        "cpu": {"name": "AMD EPYC", "torch_capability": "AVX2"},
    }
    (model / "quantization.json").write_text(json.dumps(record))
    publish_run(model, report, tmp_path / "pub")
    card = (tmp_path / "pub" / "README.md").read_text()
    assert (
        "- Calibration forward passes in float32 on cpu (AMD EPYC, torch capability AVX2): AMD EPYC has no native BF16"
        in card
    )


def test_card_without_report_claims_nothing(tmp_path, artifacts):
    model, _ = artifacts
    publish_run(model, None, tmp_path / "pub", MODEL)
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "Not validated in this run: no numbers are claimed." in card and "| metric |" not in card


def test_report_for_another_model_is_refused(tmp_path, artifacts):
    model, report = artifacts
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(PublishError, match="has no results for"):
        publish_run(other, report, tmp_path / "pub", MODEL)
    assert not (tmp_path / "pub").exists()


def test_existing_folder_needs_force(tmp_path, artifacts):
    model, report = artifacts
    (tmp_path / "pub").mkdir()
    with pytest.raises(FileExistsError):
        publish_run(model, report, tmp_path / "pub", MODEL)


def test_push_without_token_uploads_nothing(tmp_path, artifacts, monkeypatch):
    model, report = artifacts
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no stored token
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish_run(model, report, tmp_path / "pub", MODEL, PublishConfig(repo_id="me/x", push=True))


def test_push_to_unreachable_hub_is_a_clear_error(tmp_path, artifacts, monkeypatch):
    model, report = artifacts
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(PublishError, match="nothing was uploaded|no commit was made"):
        publish_run(model, report, tmp_path / "pub", MODEL, PublishConfig(repo_id="me/x", push=True))


def test_push_needs_repo_id(tmp_path, artifacts):
    model, report = artifacts
    with pytest.raises(PublishError, match="repo_id"):
        publish_run(model, report, tmp_path / "pub", MODEL, PublishConfig(push=True))


def test_runtimes_follow_the_checkpoints_settings():
    from tulu_quant.stages.publish import runtimes

    asym = dict(runtimes({"bits": 4, "sym": False, "group_size": 64, "desc_act": False}))
    assert asym["transformers + GPTQModel (CPU, CUDA)"] == "yes"
    assert all("asymmetric" in v for k, v in asym.items() if k.startswith("vLLM"))
    assert asym["onnxruntime-genai model builder (int4 MatMulNBits)"] == "yes"
    eight = dict(runtimes({"bits": 8, "sym": True, "group_size": 128, "desc_act": False}))
    assert eight["vLLM 0.32, CUDA (compute capability 7.5+)"] == "yes"
    assert (
        "not 8" in eight["vLLM 0.32, CPU with AVX512"]
        and "4-bit GPTQ only" in eight["onnxruntime-genai model builder (int4 MatMulNBits)"]
    )


def test_gguf_files_go_under_gguf_with_their_measured_numbers(tmp_path, artifacts):
    model, report_dir = artifacts
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    for name in ("tulu-13b-Q4_K_M.gguf", "tulu-13b-Q8_0.gguf", "imatrix.gguf"):
        (gguf / name).write_bytes(name.encode() * 100)
    files = [
        {"type": "Q4_K_M", "file": "tulu-13b-Q4_K_M.gguf", "bytes": 7_865_000_000, "bits_per_weight": 4.84,
         "imatrix": True, "fallbacks": []},
        {"type": "Q8_0", "file": "tulu-13b-Q8_0.gguf", "bytes": 13_830_000_000, "bits_per_weight": 8.5,
         "imatrix": False, "fallbacks": []},
    ]  # fmt: skip
    (gguf / "gguf.json").write_text(json.dumps({"files": files, "imatrix": {"samples": 128}}))
    report = json.loads((report_dir / "report.json").read_text())
    report["candidates"].append(
        {
            "path": str(gguf / "tulu-13b-Q4_K_M.gguf"),
            "name": "tulu-13b-Q4_K_M.gguf",
            "metrics": {"kl_mean": metric("kl_mean", "KL", 0.0123, "nats"), "top1_agreement": metric("t", "t", 94.5)},
            "deltas": {"ppl.wiki": {"delta": 0.05, "delta_pct": 1.37, "ci": [1.1, 1.6], "ci_unit": "%"}},
            "passed": True,
        }
    )
    (report_dir / "report.json").write_text(json.dumps(report))
    result = publish_run(model, report_dir, tmp_path / "pub", cfg=PublishConfig(repo_id="me/tulu-13b"), gguf_dir=gguf)
    out = tmp_path / "pub"
    assert {"gguf/tulu-13b-Q4_K_M.gguf", "gguf/tulu-13b-Q8_0.gguf", "gguf/imatrix.gguf"} <= set(result.files)
    assert "gguf/gguf.json" not in result.files  # our record (local paths) stays in the run directory
    card = (out / "README.md").read_text()
    assert "- gguf\n" in card and "## GGUF (llama.cpp, Ollama, LM Studio)" in card
    assert (
        "| `gguf/tulu-13b-Q4_K_M.gguf` | Q4_K_M | 7.32 GiB | 4.84 | yes (128 samples) | +1.37 % | 0.0123 | 94.5 |"
        in card
    )
    assert "| `gguf/tulu-13b-Q8_0.gguf` | Q8_0 | 12.88 GiB | 8.50 | no | - | - | - | - |" in card
    assert "hf download me/tulu-13b gguf/tulu-13b-Q4_K_M.gguf" in card
    assert "The license section above applies to these files too." in card
    sums = (out / "SHA256SUMS").read_text()
    assert "  gguf/tulu-13b-Q8_0.gguf\n" in sums


def test_card_names_autoround_when_the_checkpoint_came_from_it(tmp_path, artifacts):
    model, report = artifacts
    quant = {"bits": 4, "group_size": 64, "sym": True, "desc_act": False, "quant_method": "gptq"}
    quant.update(provider="auto-round", iters=50, autoround_version="0.16.1")  # as AutoRound 0.16.1 exports it
    (model / "quantize_config.json").write_text(json.dumps(quant))
    publish_run(model, report, tmp_path / "pub")
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "(AutoRound, 50 tuning steps per layer), in the standard GPTQ (v1)" in card
    assert "iters 50" in card and "(GPTQModel)" not in card
