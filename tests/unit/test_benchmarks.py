"""make bench's docs assembly: sections in a fixed order, a section not re-run keeps its previous text."""

from __future__ import annotations

from benchmarks.bench import assemble_docs


def test_sections_are_replaced_kept_and_ordered(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- section: onnx -->\nold onnx\n\n<!-- section: recover -->\nold recover\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "recover.md").write_text("## new recover\n")
    (out / "validate.md").write_text("## new validate\n")
    (out / "extra.md").write_text("## something else\n")
    text = assemble_docs(out, doc).read_text()
    order = [text.index(s) for s in ("new recover", "new validate", "old onnx", "something else")]
    assert order == sorted(order)
    assert "old recover" not in text and text.startswith("# Benchmarks")
    assert text.count("<!-- section: ") == 4


def test_batch_table_shows_speedups_and_what_vllm_refused():
    from benchmarks.bench_batch import markdown

    rows = [
        {"batch": 1, "generate_tokens_per_s": 10.0, "score_tokens_per_s": 100.0},
        {"batch": 4, "generate_tokens_per_s": 30.0, "score_tokens_per_s": 110.0},
    ]
    result = {
        "command": "c",
        "machine": "m",
        "load_before": "0",
        "load_after": "0",
        "backends": [
            {"name": "GPTQ (vLLM CPU)", "refused": "this CPU lacks AVX512"},
            {"name": "fp16", "rows": rows},
        ],
    }
    text = markdown(result)
    assert "| fp16 | generate | 10 tok/s (1.0x) | 30 tok/s (3.0x) |" in text
    assert "| GPTQ (vLLM CPU) | not loaded: this CPU lacks AVX512 |" in text


def test_suite_batch_table_gives_ratios_and_names_differing_metrics(tmp_path):
    import json

    from benchmarks.bench import suite_batch_markdown, suite_with_batch

    result = {
        "machine": "m",
        "suite": "standin",
        "artifacts": ["gptq"],
        "batch": 1,
        "load_average_before": "0",
        "load_average_after": "0",
        "seconds": {"1": {"fp16": 300.0, "gptq": 200.0}, "auto": {"fp16": 100.0, "gptq": 100.0}},
        "walls": {"1": 400.0, "auto": 200.0},
        "rows": [["fp16", "gsm_cot", 90.0, 30.0, 3.0]],
        "differ": ["gptq codex_t0.8: 20.0 at batch 1, 30.0 at auto"],
    }
    (tmp_path / "suitebatch.json").write_text(json.dumps(result))
    text = suite_batch_markdown(tmp_path).read_text()
    assert "fp16: 300 s vs 100 s (3.00x); gptq: 200 s vs 100 s (2.00x)" in text
    assert "batch 1 400 s, auto 200 s (2.00x)" in text
    assert "| fp16 | gsm_cot | 90.0 | 30.0 | 3.00x |" in text
    assert "gptq codex_t0.8: 20.0 at batch 1, 30.0 at auto" in text
    # the suite copy is the shipped suite with only batch_size replaced, and loads as a suite
    from tulu_quant.config import load_suite

    one, shipped = load_suite(str(suite_with_batch(tmp_path, "standin", 1))), load_suite("standin")
    assert one.batch_size == 1 and one.model_copy(update={"batch_size": shipped.batch_size}) == shipped


def test_gguf_tables_give_ratios_against_fp16_and_llama_cpp_q4_k_m(tmp_path):
    import json

    from benchmarks.bench_gguf import markdown, quality_rows

    ref = tmp_path / "recovered"
    ref.mkdir()
    (ref / "model.safetensors").write_bytes(b"\0" * 2000)
    report = {
        "reference": {"path": str(ref), "metrics": {"ppl.wiki": {"value": 20.0}, "ppl.shakespeare": {"value": 40.0}}},
        "candidates": [
            {
                "path": "/g/m-Q4_K_M.gguf",
                "info": {"size_bytes": 500},
                "metrics": {
                    "ppl.wiki": {"value": 21.0},
                    "ppl.shakespeare": {"value": 44.0},
                    "kl_mean": {"value": 0.05},
                    "top1_agreement": {"value": 90.0},
                },
            }
        ],
    }
    rows = quality_rows(report, {"/g/m-Q4_K_M.gguf": "GGUF Q4_K_M (imatrix)"}, 1000)
    assert rows[0]["bpw"] == 16.0 and rows[1]["bpw"] == 4.0
    assert rows[1]["wiki_ratio"] == 1.05 and rows[1]["shakespeare_ratio"] == 1.1
    speed = [
        {"name": "llama.cpp Q4_K_M (imatrix, llama-cpp-python)", "ttft_ms": 50.0, "decode_tokens_per_s": 100.0},
        {"name": "int4 ONNX from GPTQ (onnxruntime-genai)", "ttft_ms": 40.0, "decode_tokens_per_s": 150.0},
    ]
    exports = {"with": {"seconds": 10, "peak_rss": 2**30, "convert_seconds": 2.0, "imatrix": None, "files": []}}
    meta = {"command": "c", "machine": {"line": "m"}, "load_before": 0, "load_after": 0}
    text = markdown({**meta, "new_tokens": 128, "prompt_tokens": 30}, rows, speed, exports)
    assert "| GGUF Q4_K_M (imatrix) | 4.00 | 21.00 | 1.050 | 44.00 | 1.100 | 0.0500 | 90.0 |" in text
    assert "| int4 ONNX from GPTQ (onnxruntime-genai) | 40 | 150.0 | 1.50x |" in text
    assert json.dumps(rows)  # the JSON record takes the same rows


def test_quantization_table_gives_ratios_runtimes_and_marks_the_default():
    from benchmarks.bench_quant import CALIBRATION, ROWS, SYM_DEFAULT, table
    from tulu_quant.config import QuantizeConfig

    def settings(values):  # what a row records
        return QuantizeConfig(**values).model_dump(mode="json")

    calib = {"num_samples": CALIBRATION["num_samples"], "seq_len": 512, "mix": [{"source": "wiki", "weight": 1.0}]}
    loads = {"transformers": "yes", "vllm_cuda": "yes", "vllm_cpu": "yes", "onnx_builder": "yes"}
    ar = {**ROWS["autoround-sym-i50-b4"][1], "autoround_iters": 40, "batch_size": 2}  # the stand-in's AutoRound
    default = {"name": "ar", "kind": "gptq", "quantize": settings(ar), "calibrate": {**calib, "num_samples": 32}}
    default.update(note="default", wiki_ppl=22.0, shakespeare_ppl=44.0, kl=0.05, top1=90.0, seconds=300)
    default.update(peak_rss=2**30, runtimes=loads, machine="m")
    gptq = {**default, "name": "sym", "quantize": settings(SYM_DEFAULT)}
    chat = {**gptq, "name": "chat", "calibrate": {**calib, "mix": [{"source": "instructions", "weight": 1.0}]}}
    chat["machine"] = "another machine"
    g32 = {**gptq, "name": "g32", "rows_at_once": 2}  # measured beside another row: its time is not compared
    asym = {**gptq, "name": "asym-mse-nts", "quantize": settings({**SYM_DEFAULT, "sym": False}), "seconds": 200}
    asym["runtimes"] = {
        **loads,
        "vllm_cuda": "vLLM refuses asymmetric GPTQ",
        "vllm_cpu": "vLLM refuses asymmetric GPTQ",
    }
    records = [
        {"name": "fp16", "kind": "fp16", "quantize": {}, "note": "weights", "wiki_ppl": 20.0, "shakespeare_ppl": 40.0},
        default,
        gptq,
        chat,
        asym,
        g32,
    ]
    text = table(records).splitlines()
    assert "| **ar (stand-in default)** |" in text[3] and "| 22.00 | 1.100 | 1.100 | 0.0500 | 90.0 % | 300 |" in text[3]
    assert "40 steps per layer" in text[3] and text[3].endswith("| transformers, vLLM CUDA, vLLM CPU, ONNX |")
    assert text[4].startswith("| sym |") and "mse 2.4" in text[4]
    assert text[5].startswith("| chat |") and "calibration 128 x 512 instructions" in text[5]
    assert "transformers, ONNX, not vLLM CUDA (vLLM refuses asymmetric GPTQ)" in text[6]
    # quantize time relative to the asym-mse-nts row, only for rows measured on its machine
    assert "| 300 | 1.50x |" in text[3] and "| 200 | 1.00x |" in text[6] and "| 300 |  |" in text[5]
    assert text[7].startswith("| g32 |") and "| 300 |  |" in text[7]


def test_rehearsal_leaves_out_of_its_projection_what_the_reference_skipped():
    from benchmarks.rehearse import skipped_sections

    log = (
        "INFO tulu_quant.eval.runner: reference recovered [6/8] TydiQA gold passage (F1): skipped (not reachable)\n"
        "INFO tulu_quant.eval.runner: gptq [3/8] MMLU 0-shot: skipped (as for the reference)\n"
        "INFO tulu_quant.eval.runner: reference recovered [4/8] GSM8K direct: done in 2.7 s (native)\n"
    )
    assert skipped_sections(log) == ["tydiqa"]
