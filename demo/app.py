"""tulu-quant's browser demo: chat with the compressed model, compare it with fp16, see what was loaded.

    tulu-quant demo --model runs/standin [--compare runs/standin] [--host 127.0.0.1] [--port 7860] [--share]
    make demo                              # the latest `make quantize` output
    python demo/app.py --model DIR ...     # the same, without the installed command

The logic (which artifact, prompts, streaming, stop, speed, the About panel) is in tulu_quant/demo/; this file is
the page: constants, load, UI, launch.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import gradio as gr

from tulu_quant import demo
from tulu_quant.config import DemoConfig
from tulu_quant.demo import conversation
from tulu_quant.demo.engine import StopSignals, compare_stream
from tulu_quant.progress import human_bytes

log = logging.getLogger("tulu_quant.demo.app")

# ------------------------------------------------------------------------------------------------------ constants

TITLE = "tulu-quant demo"
EXAMPLES = [
    "Explain in two sentences what 4-bit quantization does to a language model.",
    "Write a short poem about a llama who learns to code.",
    "Give me three tips for writing clear documentation.",
]
# System fonts only: the page makes no requests beyond this server (no web fonts, no analytics).
THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = "#chat-stats, .stats { font-size: 0.85em; opacity: 0.8; min-height: 1.5em; }"


# ------------------------------------------------------------------------------------------------------ load


def load(model: Path, compare: Path | None, cfg: DemoConfig) -> demo.DemoModels:
    """One instance of each model, shared by every browser tab."""
    return demo.load_models(model, compare, cfg)


# ------------------------------------------------------------------------------------------------------ UI


def build_ui(models: demo.DemoModels, cfg: DemoConfig) -> gr.Blocks:
    main, other = models.main, models.compare
    signals = StopSignals()  # Stop ends the answer of the browser session that pressed it
    generation = {"concurrency_limit": cfg.concurrency_limit, "concurrency_id": "model", "api_visibility": "private"}
    instant = {"queue": False, "api_visibility": "private"}
    # Checks of a message run queued (without a limit) so that a refusal shows its message.
    checked = {"concurrency_limit": None, "api_visibility": "private", "show_progress": "hidden"}

    def busy(on: bool):
        """The message box and the buttons that start an answer, off while one is being generated."""
        return gr.Textbox(interactive=not on), gr.Button(interactive=not on), gr.Button(interactive=not on)

    def add_user(text, history, request: gr.Request):
        try:
            message = conversation.check_message(text, cfg.max_input_chars)
        except conversation.InputError as err:
            raise gr.Error(str(err)) from None
        signals.arm(request.session_hash)
        return (
            [*(history or []), {"role": "user", "content": message}],
            gr.Textbox(value="", interactive=False),
            *busy(True)[1:],
        )

    def regenerate_from(history, request: gr.Request):
        try:
            history = conversation.drop_last_answer(history)
        except conversation.InputError as err:
            raise gr.Error(str(err)) from None
        signals.arm(request.session_hash)
        return history, *busy(True)

    def respond(history, max_new_tokens, temperature, top_p, repetition_penalty, seed, request: gr.Request):
        settings = conversation.settings_from_ui(max_new_tokens, temperature, top_p, repetition_penalty, seed)
        messages = conversation.to_messages(history)
        stop = signals.take(request.session_hash)
        try:
            conversation.check_conversation(messages, cfg.max_conversation_chars)
            for reply in main.stream(messages, settings, stop):
                answer = [{"role": "assistant", "content": reply.text}] if reply.text or not reply.done else []
                yield [*history, *answer], reply.stats()
        except conversation.InputError as err:
            raise gr.Error(str(err)) from None
        finally:
            signals.release(request.session_hash, stop)

    def compare(prompt, max_new_tokens, temperature, top_p, repetition_penalty, seed, request: gr.Request):
        try:
            message = conversation.check_message(prompt, cfg.max_input_chars)
        except conversation.InputError as err:
            raise gr.Error(str(err)) from None
        settings = conversation.settings_from_ui(max_new_tokens, temperature, top_p, repetition_penalty, seed)
        user = {"role": "user", "content": message}
        stop = signals.arm(request.session_hash)
        try:
            for left, right in compare_stream([main, other], [user], settings, stop):
                yield (
                    [user, {"role": "assistant", "content": left.text}],
                    left.stats(),
                    [user, {"role": "assistant", "content": right.text}],
                    right.stats(),
                )
        finally:
            signals.release(request.session_hash, stop)

    def stop_answer(request: gr.Request):
        signals.stop(request.session_hash)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as ui:
        gr.Markdown(
            f"## {TITLE}\nServing the **{main.artifact.label}** `{main.artifact.path}`, "
            f"{human_bytes(main.size_bytes)} on disk. Why this one: {models.choice.reason}."
        )
        with gr.Tab("Chat"):
            chatbot = gr.Chatbot(
                elem_id="chat",
                show_label=False,
                height=440,
                buttons=["copy"],
                feedback_options=None,
                allow_file_downloads=False,
                placeholder="Ask the model something.",
            )
            stats = gr.Markdown(elem_id="chat-stats")
            with gr.Row():
                hint = f"Message (Enter to send, at most {cfg.max_input_chars:,} characters)"
                textbox = gr.Textbox(
                    elem_id="message", show_label=False, scale=8, lines=1, max_lines=8, autofocus=True, placeholder=hint
                )
                send = gr.Button("Send", elem_id="send", variant="primary", scale=1, min_width=80)
            with gr.Row():
                stop = gr.Button("Stop", elem_id="stop", variant="stop", size="sm")
                regenerate = gr.Button("Regenerate", elem_id="regenerate", size="sm")
                clear = gr.Button("Clear", elem_id="clear", size="sm")
            gr.Examples(EXAMPLES, inputs=[textbox], label="Examples")
        if other is not None:
            with gr.Tab("Compare"):
                gr.Markdown(
                    "The same prompt and settings, answered by each model in turn (one at a time, so each "
                    "speed is measured alone)."
                )
                with gr.Row():
                    prompt = gr.Textbox(elem_id="compare-prompt", show_label=False, scale=8, placeholder="Prompt")
                    run_compare = gr.Button("Compare", elem_id="compare", variant="primary", scale=1, min_width=80)
                    stop_compare = gr.Button("Stop", variant="stop", scale=1, min_width=80)
                with gr.Row():
                    panes = []
                    for index, engine in enumerate((main, other)):
                        with gr.Column():
                            gr.Markdown(f"**{engine.artifact.label}**, {human_bytes(engine.size_bytes)} on disk")
                            panes += [
                                gr.Chatbot(
                                    elem_id=f"compare-chat-{index}",
                                    show_label=False,
                                    height=360,
                                    buttons=["copy"],
                                    feedback_options=None,
                                    allow_file_downloads=False,
                                ),
                                gr.Markdown(elem_id=f"compare-stats-{index}", elem_classes=["stats"]),
                            ]
        with gr.Tab("About"):
            gr.Markdown(models.about, elem_id="about")
        with gr.Accordion("Generation settings", open=False):
            with gr.Row():
                max_new_tokens = gr.Slider(
                    1, cfg.max_new_tokens_limit, value=cfg.max_new_tokens, step=1, label="max new tokens"
                )
                temperature = gr.Slider(0.0, 2.0, value=cfg.temperature, step=0.05, label="temperature (0: greedy)")
                top_p = gr.Slider(0.05, 1.0, value=cfg.top_p, step=0.05, label="top-p")
                repetition_penalty = gr.Slider(
                    1.0, 2.0, value=cfg.repetition_penalty, step=0.05, label="repetition penalty"
                )
                seed = gr.Number(value=-1 if cfg.seed is None else cfg.seed, precision=0, label="seed (-1: random)")
        settings = [max_new_tokens, temperature, top_p, repetition_penalty, seed]

        # Events. An answer is generated in the queue (one concurrency limit shared by both tabs); the rest is instant.
        # Stop ends this session's answer at the next token and keeps it (with its speed); Clear and Regenerate
        # cancel it (a cancelled or closed stream also ends generation at the next token).
        controls = [textbox, send, regenerate]
        answers = []
        for trigger in (textbox.submit, send.click):
            sent = trigger(add_user, [textbox, chatbot], [chatbot, *controls], show_progress_on=[textbox], **checked)
            answers.append(sent.success(respond, [chatbot, *settings], [chatbot, stats], **generation))
        again = regenerate.click(
            regenerate_from,
            [chatbot],
            [chatbot, *controls],
            cancels=list(answers),
            show_progress_on=[regenerate],
            **checked,
        )
        answers.append(again.success(respond, [chatbot, *settings], [chatbot, stats], **generation))
        for answer in answers:
            answer.then(lambda: busy(False), None, controls, **instant)
        stop.click(stop_answer, None, None, **instant)
        for clearing in (clear.click, chatbot.clear):
            clearing(lambda: ([], "", *busy(False)), None, [chatbot, stats, *controls], cancels=answers, **instant)
        if other is not None:
            for trigger in (prompt.submit, run_compare.click):
                trigger(compare, [prompt, *settings], panes, **generation)
            stop_compare.click(stop_answer, None, None, **instant)
    return ui


# ------------------------------------------------------------------------------------------------------ launch


def launch(ui: gr.Blocks, cfg: DemoConfig, block: bool = True) -> str:
    """Serve the page (local address unless cfg.host says otherwise; a public link only with cfg.share); returns the
    URL. With block, serve until interrupted."""
    ui.queue(default_concurrency_limit=cfg.concurrency_limit, max_size=cfg.max_queue_size)
    try:
        _, local_url, share_url = ui.launch(
            server_name=cfg.host,
            server_port=cfg.port,
            share=cfg.share,
            quiet=True,
            prevent_thread_lock=True,
            show_error=False,
            ssr_mode=False,
            mcp_server=False,
            footer_links=["gradio", "settings"],
            theme=THEME,
            css=CSS,
        )
    except OSError as err:
        raise RuntimeError(
            f"cannot serve on {cfg.host}:{cfg.port} ({str(err).split('.')[0]}); pass another --port or --host."
        ) from None
    url = share_url or local_url
    if share_url:
        log.warning("demo: anyone with the public link can use this model while the demo runs")
    log.info("demo: open %s%s (Ctrl-C to stop)", local_url, f" or the public link {share_url}" if share_url else "")
    if block:
        try:
            ui.block_thread()  # returns on Ctrl-C
        finally:
            ui.close(verbose=False)
            log.info("demo: stopped")
    return url


def main(model: Path, compare: Path | None, cfg: DemoConfig) -> None:
    launch(build_ui(load(model, compare, cfg), cfg), cfg)


if __name__ == "__main__":
    from tulu_quant.cli import main as cli

    sys.exit(cli(["demo", *sys.argv[1:]]))
