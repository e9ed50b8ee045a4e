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
