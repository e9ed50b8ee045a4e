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
