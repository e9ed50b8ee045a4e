"""captured(): third-party output goes to the log file, ours to the terminal, even with stale console handlers."""

from __future__ import annotations

import io
import logging
import os

from tulu_quant.progress import captured


def test_fd_output_goes_to_the_log_and_a_closed_console_handler_is_ignored(tmp_path):
    stale = io.StringIO()
    handler = logging.StreamHandler(stale)
    logging.getLogger().addHandler(handler)
    stale.close()  # what a finished test's captured stderr looks like to a handler the CLI installed earlier
    try:
        with captured(tmp_path / "log"):
            os.write(1, b"banner from a C library\n")
            os.write(2, b"progress from a library\n")
    finally:
        logging.getLogger().removeHandler(handler)
    text = (tmp_path / "log").read_text()
    assert "banner from a C library" in text and "progress from a library" in text


def test_peak_rss_counts_the_memory_of_child_processes():
    """validate's workers hold the models: a stage's peak RSS is its process tree's, not the parent's alone."""
    import subprocess
    import sys

    from tulu_quant.progress import measure

    held = 400 << 20
    child = f"import time; block = bytearray({held}); print('ready', flush=True); time.sleep(1.0)"
    with measure(interval=0.05) as usage:
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.wait()
    assert usage.peak_rss - usage.start_rss > 0.9 * held
