"""Progress, logging and resource measurement shared by the stages.

Only the CLI turns the display on (``Progress(enabled=True)``) and configures log handlers; library code receives a
``Progress`` and calls ``progress.task(...)``, which is silent when disabled. Third-party libraries that print banners
to the terminal are wrapped in ``captured(log_file)``: their stdout/stderr (file descriptors 1 and 2, so C extensions
too) go to the run's log file instead of the user's terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class Progress:
    """One progress display. Disabled (the default for library calls and tests) it only counts."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled and sys.stderr.isatty()

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "it", unit_scale: bool = False):
        """Yield advance(n=1, **postfix). With unit_scale, totals such as bytes print as 1.2G."""
        if not self.enabled:
            yield lambda n=1, **_: None
            return
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            desc=description,
            unit=unit,
            unit_scale=unit_scale,
            unit_divisor=1024 if unit == "B" else 1000,
            file=terminal_stream(),
            dynamic_ncols=True,
            leave=False,
        )

        def advance(n: float = 1, **postfix):
            bar.update(n)
            if postfix:
                bar.set_postfix(postfix, refresh=False)

        try:
            yield advance
        finally:
            bar.close()

    def echo(self, line: str) -> None:
        """A line for the user (summaries). Printed even when the bar is disabled; goes to stderr."""
        print(line, file=terminal_stream(), flush=True)


NULL = Progress(False)


# ---------------------------------------------------------------------------------------------------------- logging


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """Called by the CLI only: INFO (DEBUG with -v) to stderr, everything to the log file when given."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    # Our own records reach the terminal; other libraries' warnings go to the log file only (errors still show).
    console.addFilter(lambda record: record.name.startswith("tulu_quant") or record.levelno >= logging.ERROR)
    root.addHandler(console)
    if log_file is not None:
        add_log_file(log_file)


def add_log_file(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


_capturing: list[Path] = []  # the log file currently receiving fds 1 and 2 (nested calls are no-ops)


@contextlib.contextmanager
def captured(log_file: Path | None) -> Iterator[None]:
    """Send fds 1 and 2 (Python and C writers alike) to log_file while the body runs; the terminal stays clean.

    Our own log records and the progress display still reach the terminal: console handlers and Progress objects are
    pointed at duplicates of the original stdout/stderr for the duration. Nested calls are no-ops.
    """
    if log_file is None or _capturing:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal_out = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    terminal_err = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    # Console handlers only; one left over with a closed stream (a test's captured stderr, say) is left alone.
    console_handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and not getattr(h.stream, "closed", False)
    ]
    old_streams = [h.setStream(terminal_err) for h in console_handlers]
    _terminal[:] = [terminal_out, terminal_err]
    _capturing.append(log_file)
    with open(log_file, "ab", buffering=0) as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            for handler, stream in zip(console_handlers, old_streams):
                handler.setStream(stream)
            _capturing.pop()
            _terminal.clear()
            terminal_out.close()
            terminal_err.close()


_terminal: list = []  # [stdout, stderr] of the real terminal while captured() is active


def terminal_stream(which: str = "err"):
    """Where user-facing output goes: the real terminal even while third-party output is captured."""
    if _terminal:
        return _terminal[0] if which == "out" else _terminal[1]
    return sys.stdout if which == "out" else sys.stderr


# ---------------------------------------------------------------------------------------------------------- resources


def rss_bytes() -> int:
    """Current resident set size of this process."""
    import psutil

    return psutil.Process().memory_info().rss


def tree_rss_bytes() -> int:
    """Resident set size of this process and its children (validate's workers, a converter, a server)."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # it exited between the listing and the reading
            pass
    return total


@dataclass
class Usage:
    seconds: float = 0.0
    peak_rss: int = 0  # bytes, sampled while the block ran
    start_rss: int = 0

    @property
    def peak_growth(self) -> int:
        return max(0, self.peak_rss - self.start_rss)


@contextlib.contextmanager
def measure(interval: float = 0.02) -> Iterator[Usage]:
    """Wall time and the peak RSS reached inside the block: this process's and its children's together, sampled by a
    thread, plus this process's kernel high-water mark where it rose, which catches its spikes between samples."""
    usage = Usage(start_rss=rss_bytes())
    usage.peak_rss = usage.start_rss
    hwm_before = _hwm()
    stop = threading.Event()

    def sample():
        while not stop.wait(interval):
            usage.peak_rss = max(usage.peak_rss, tree_rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        yield usage
    finally:
        stop.set()
        thread.join()
        usage.seconds = time.perf_counter() - start
        hwm_after = _hwm()
        if hwm_after > hwm_before:  # the process-wide high-water mark rose during the block: that rise is ours
            usage.peak_rss = max(usage.peak_rss, hwm_after)
        usage.peak_rss = max(usage.peak_rss, rss_bytes())


def _hwm() -> int:
    """The kernel's peak RSS for this process (VmHWM), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{int(m)} min {int(s)} s"
    h, m = divmod(m, 60)
    return f"{int(h)} h {int(m)} min"
