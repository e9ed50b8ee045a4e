import time

from tulu_quant.eval.sandbox import Limits, humaneval_program, run_program

PROBLEM = {
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
}


def test_correct_and_wrong_completions():
    assert run_program(humaneval_program(PROBLEM, "    return a + b\n")).passed
    wrong = run_program(humaneval_program(PROBLEM, "    return a - b\n"))
    assert not wrong.passed and wrong.status == "failed" and "AssertionError" in wrong.detail


def test_runaway_sample_is_killed_within_the_limit():
    start = time.monotonic()
    outcome = run_program(humaneval_program(PROBLEM, "    while True:\n        pass\n"), Limits(timeout_s=1.5))
    assert outcome.status == "timed out" and not outcome.passed
    assert time.monotonic() - start < 6


def test_memory_blowup_and_escapes_are_refused(tmp_path):
    memory = run_program("x = bytearray(8 << 30)\n", Limits(timeout_s=5, memory_bytes=512 << 20))
    assert memory.status == "failed" and "MemoryError" in memory.detail
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    for escape in (
        f"import os\nos.remove({str(victim)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        "import os\nos.fork()",
        "import subprocess\nsubprocess.Popen(['sleep', '60'])",
    ):
        assert not run_program(escape, Limits(timeout_s=5)).passed
    assert victim.read_text() == "precious"
