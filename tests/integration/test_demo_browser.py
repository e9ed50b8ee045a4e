"""The demo page in a real browser: headless Chromium (Debian's, driven by Python playwright) against demo/app.py
serving a tiny random LLaMA with a real tokenizer. Type, press Enter, watch the reply stream in; Stop; several
browsers at once; the input cap. The fixture installs chromium when it is missing and it runs as root."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from tiny import save_tiny_hf, word_tokenizer

from tulu_quant import demo
from tulu_quant.config import DemoConfig
from tulu_quant.demo.conversation import settings_from_ui
from tulu_quant.demo.engine import Engine
from tulu_quant.progress import human_bytes

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WORDS = (
    "the quick brown fox jumps over lazy dog hello you said bye a cat small model answers every question with "
    "words from this list only and never stops talking about llamas"
).split()
TOKEN_DELAY = 0.03  # seconds added per token so that the page's streaming can be watched
BOT = "#chat [data-testid='bot']"
USER = "#chat [data-testid='user']"


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; installed here (apt-get, as root) when missing, as on a fresh CI machine."""
    if not CHROMIUM.exists() and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "install", "-y", "chromium"],
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "chromium"],
        ):
            if CHROMIUM.exists():
                break
            subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed and could not be installed here (apt-get install -y chromium as root)")
    return CHROMIUM


def build_tiny_chat_model(root: Path, seed: int = 0) -> Path:
    """A random 2-layer LLaMA whose tokenizer (WordLevel over WORDS) decodes to plain words; it never emits EOS: its
    special tokens get logit 0, below the best of the random word logits, so answers run to the token budget."""
    return save_tiny_hf(root, word_tokenizer(WORDS), seed=seed, max_position_embeddings=512, silent_rows=4)


class Paced:
    """The real backend with a pause before each token reaches the page."""

    def __init__(self, backend, delay: float):
        self._backend, self._delay = backend, delay

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def generate(self, ids, settings, on_token=None, stop_ids=()):
        def paced(token):
            time.sleep(self._delay)
            return on_token(token) if on_token is not None else None

        return self._backend.generate(ids, settings, paced, stop_ids)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, models, cfg): the demo page on 127.0.0.1, greedy so that answers can be predicted; a second tiny model
    (other weights) for the Compare tab."""
    cfg = DemoConfig(port=free_port(), temperature=0.0, max_new_tokens=16, max_input_chars=200)
    app = demo.load_app()
    models = app.load(
        build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat")),
        build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-other"), seed=1),
        cfg,
    )
    models.main.backend = Paced(models.main.backend, TOKEN_DELAY)
    ui = app.build_ui(models, cfg)
    url = app.launch(ui, cfg, block=False)
    yield url, models, cfg
    ui.close(verbose=False)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


def expected_answer(models, cfg, conversation: list[dict[str, str]], engine=None) -> str:
    """The answer the page should show, computed directly (without the pacing) with the page's settings."""
    engine = engine or models.main
    direct = Engine(getattr(engine.backend, "_backend", engine.backend), engine.artifact, engine.chat_format)
    settings = settings_from_ui(cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.repetition_penalty, -1)
    return list(direct.stream(conversation, settings))[-1].text


def open_page(browser, url: str):
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    page.goto(url)
    page.wait_for_selector("#message textarea")
    # Record every text the last bot message shows, to see the answer arrive piece by piece.
    page.evaluate("""() => { window.seen = [];
        new MutationObserver(() => { const bots = document.querySelectorAll("#chat [data-testid='bot']");
            if (bots.length) { const t = bots[bots.length - 1].innerText;
                if (window.seen[window.seen.length - 1] !== t) window.seen.push(t); } })
        .observe(document.body, {subtree: true, childList: true, characterData: true}); }""")
    return page


def send(page, text: str) -> None:
    page.fill("#message textarea", text)
    page.press("#message textarea", "Enter")


def wait_answered(page, answers: int, timeout: float = 20_000) -> str:
    """Wait until the page shows `answers` bot messages and the final speed line; returns that line."""
    page.wait_for_function(
        f"""() => document.querySelectorAll("{BOT}").length === {answers} &&
        document.querySelector('#chat-stats').innerText.includes('tokens/s') &&
        !document.querySelector('#chat-stats').innerText.includes('...') &&
        !document.querySelector('#message textarea').disabled""",
        timeout=timeout,
    )
    return page.inner_text("#chat-stats")


def words(text: str) -> list[str]:
    return text.split()


def test_chat_streams_replies_in_the_browser(served, browser, tmp_path):
    url, models, cfg = served
    page = open_page(browser, url)
    assert page.title() == "tulu-quant demo" and "float16 model" in page.inner_text("body")
    send(page, "hello fox")
    stats = wait_answered(page, 1)
    first = expected_answer(models, cfg, [{"role": "user", "content": "hello fox"}])
    assert page.inner_text(USER) == "hello fox" and words(page.inner_text(BOT)) == words(first) and first
    seen = page.evaluate("window.seen")
    assert len(seen) >= 3 and all(words(a) == words(b)[: len(words(a))] for a, b in zip(seen, seen[1:]))  # streamed
    assert stats.startswith(f"{len(words(first))} tokens · first token") and "tokens/s" in stats
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (
        tmp_path / "demo.png"
    ).stat().st_size > 10_000

    send(page, "bye")  # a second turn: the prompt carries the first exchange
    wait_answered(page, 2)
    second = expected_answer(
        models,
        cfg,
        [
            {"role": "user", "content": "hello fox"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "bye"},
        ],
    )
    assert words(page.locator(BOT).nth(1).inner_text()) == words(second)

    page.click("#regenerate")  # greedy: the same answer again, still two exchanges
    page.wait_for_timeout(200)
    wait_answered(page, 2)
    assert page.locator(USER).count() == 2 and words(page.locator(BOT).nth(1).inner_text()) == words(second)
    page.click("#clear")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length === 0')
    page.context.close()


def test_stop_keeps_the_partial_answer_and_its_speed(served, browser):
    url, models, cfg = served
    models.main.backend._delay = 0.15  # slow enough to press Stop mid-answer
    try:
        page = open_page(browser, url)
        send(page, "the quick brown fox")
        page.wait_for_function(
            f"() => {{ const b = document.querySelector(\"{BOT}\"); return b && b.innerText.split(' ').length >= 2; }}"
        )
        page.click("#stop")
        stats = wait_answered(page, 1)
        assert "stopped" in stats and len(words(page.inner_text(BOT))) < cfg.max_new_tokens
        assert page.is_enabled("#message textarea")
        page.context.close()
    finally:
        models.main.backend._delay = TOKEN_DELAY


def test_too_long_input_is_refused_with_a_message(served, browser):
    url, _, cfg = served
    page = open_page(browser, url)
    send(page, "fox " * 60)
    page.wait_for_selector(f"text=this demo accepts at most {cfg.max_input_chars}", timeout=10_000)
    assert page.locator(USER).count() == 0 and page.input_value("#message textarea").startswith("fox fox")
    page.context.close()


def test_simultaneous_chats_complete_without_mixing(served, browser):
    url, models, cfg = served
    messages = ["hello dog", "small cat", "llamas answers every question"]
    answers = [expected_answer(models, cfg, [{"role": "user", "content": message}]) for message in messages]
    assert len(set(answers)) == len(messages)  # distinct answers: a mixed-up page would show another's
    pages = [open_page(browser, url) for _ in messages]
    for page, message in zip(pages, messages):
        send(page, message)
    for page, message, answer in zip(pages, messages, answers):
        wait_answered(page, 1, timeout=30_000)
        assert page.locator(USER).count() == 1 and page.inner_text(USER) == message
        assert words(page.inner_text(BOT)) == words(answer)
    for page in pages:
        page.context.close()


def test_compare_tab_answers_with_both_models(served, browser):
    url, models, cfg = served
    prompt = [{"role": "user", "content": "quick brown fox"}]
    expected = [expected_answer(models, cfg, prompt, engine) for engine in (models.main, models.compare)]
    assert expected[0] != expected[1]
    page = open_page(browser, url)
    page.get_by_role("tab", name="Compare").click()
    page.fill("#compare-prompt textarea", "quick brown fox")
    page.click("#compare")
    page.wait_for_function(
        """() => [0, 1].every(i => { const s = document.querySelector('#compare-stats-' + i);
        return s && s.innerText.includes('tokens/s') && !s.innerText.includes('...'); })""",
        timeout=20_000,
    )
    for index, answer in enumerate(expected):
        assert words(page.locator(f"#compare-chat-{index} [data-testid='bot']").inner_text()) == words(answer)
    captions = [f"{e.artifact.label}, {human_bytes(e.size_bytes)} on disk" for e in (models.main, models.compare)]
    for caption in captions:  # each pane names its model and its size on disk
        assert page.get_by_text(caption).count() == captions.count(caption)
    page.context.close()


def test_no_files_and_no_public_api_are_served(served):
    import json
    import urllib.error
    import urllib.request

    url, models, _ = served
    for target in (Path(__file__).resolve(), models.main.artifact.path / "config.json", Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/file={target}", timeout=10)
        assert refused.value.code == 403
    with urllib.request.urlopen(f"{url}gradio_api/info", timeout=10) as response:
        assert json.loads(response.read()) == {"named_endpoints": {}, "unnamed_endpoints": {}}
