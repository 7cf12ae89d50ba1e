"""Chat tab: talk to a fine-tuned run (base + adapter) or a base model, token by token.

A run is prompted exactly as it was trained (its chat template, thinking mode and system prompt
come from the run folder, studio.inference). With "compare", the same prompt is also answered by
the run's base model with the same template, side by side. Qwen3 thinking is shown folded.
"""
from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from backends import CHAT
from studio.models.catalog import CATALOG, DEMO_MODEL_ID, TINY_QWEN3_ID, hub_cache_has, is_local_model
from studio.runs.store import is_run_dir
from studio.service.actions import Refused, Service
from studio.ui.common import first_line, guard, md, note, shout, unmd
from studio.ui.i18n import T, error_text, say, state_word


@dataclass
class ChatTab:
    source: gr.Dropdown
    compare: gr.Checkbox
    status: gr.HTML
    tuned: gr.Chatbot
    base: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    regenerate: gr.Button
    clear: gr.Button
    system: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_new_tokens: gr.Slider
    thinking: gr.Checkbox
    serve: gr.Checkbox
    serve_status: gr.HTML
    serve_code: gr.Code


# ---------------------------------------------------------------------------- layout
def build() -> ChatTab:
    with gr.Row(equal_height=True):
        source = gr.Dropdown([], label=T("chat.source"), allow_custom_value=True, scale=5,
                             info=T("chat.source.info"), elem_id="chat-source")
        compare = gr.Checkbox(True, label=T("chat.compare"), scale=2, elem_id="chat-compare")
    status = gr.HTML("", elem_id="chat-status")      # drawn on page load, in its language
    with gr.Row(equal_height=True):
        tuned = gr.Chatbot(label=T("chat.tuned"), height=420, elem_id="chat-tuned",
                           buttons=["copy"])
        base = gr.Chatbot(label=T("chat.base"), height=420, elem_id="chat-base",
                          buttons=["copy"])
    with gr.Row(equal_height=True):
        message = gr.Textbox(label=T("chat.message"), placeholder=T("chat.message"),
                             show_label=False, scale=6, lines=1, elem_id="chat-message")
        send = gr.Button(T("chat.send"), variant="primary", scale=1, min_width=80,
                         elem_id="chat-send")
    with gr.Row():
        regenerate = gr.Button(T("chat.regenerate"), size="sm", elem_id="chat-regenerate")
        clear = gr.Button(T("chat.clear"), size="sm", elem_id="chat-clear")
    with gr.Accordion(T("chat.settings"), open=True):
        with gr.Row():
            system = gr.Textbox(label=T("chat.system"), placeholder=T("chat.system.placeholder"),
                                scale=3)
            temperature = gr.Slider(0, 2, value=CHAT.temperature, step=0.05,
                                    label=T("chat.temperature"),
                                    elem_id="chat-temperature", info=T("chat.temperature.info"))
            top_p = gr.Slider(0.05, 1, value=CHAT.top_p, step=0.05, label=T("chat.top_p"))
            max_new_tokens = gr.Slider(16, 2048, value=CHAT.max_new_tokens, step=16,
                                       label=T("chat.max_new_tokens"),
                                       elem_id="chat-max-new-tokens")
            thinking = gr.Checkbox(False, label=T("chat.thinking"), info=T("chat.thinking.info"),
                                   elem_id="chat-thinking")
    serve = gr.Checkbox(False, label=T("serve.toggle"), info=T("serve.toggle.info"),
                        elem_id="chat-serve")
    serve_status = gr.HTML("", elem_id="chat-serve-status")
    serve_code = gr.Code(language="python", label=T("serve.code"), interactive=False,
                         visible=False, elem_id="chat-serve-code")
    return ChatTab(source, compare, status, tuned, base, message, send, regenerate, clear,
                   system, temperature, top_p, max_new_tokens, thinking, serve, serve_status,
                   serve_code)


# ---------------------------------------------------------------------------- helpers
def sources(service: Service) -> list[tuple[str, str]]:
    """(label, value) for the chat picker: runs with an adapter, then base models."""
    runs = [(say("chat.run_choice", name=run.name, state=state_word(run.status.state),
                 base=Path(base).name if is_local_model(base) else base),
             str(run.run_dir)) for run, base in service.chat_runs()]
    bases = [DEMO_MODEL_ID, TINY_QWEN3_ID] + [m.id for m in CATALOG
                                              if "/" in m.id and hub_cache_has(m.id)]
    return runs + [(say("chat.base_choice", name=b), b) for b in bases]


def text_of(content) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def to_messages(history: list, system: str) -> list[dict]:
    """The conversation for the model: thinking bubbles left out, text only, as typed and
    answered (the bubbles show it escaped: md())."""
    out = [{"role": "system", "content": system.strip()}] if system and system.strip() else []
    for m in history:
        if (m.get("metadata") or {}).get("title"):
            continue
        out.append({"role": m["role"], "content": unmd(text_of(m.get("content")))})
    return out


def reply_bubbles(text: str, done: bool) -> list[dict]:
    from studio.inference import split_thinking

    thinking, answer = split_thinking(text)
    out = []
    if thinking:
        out.append({"role": "assistant", "content": md(thinking),
                    "metadata": {"title": say("chat.thinking_bubble"),
                                 "status": "done" if done else "pending"}})
    out.append({"role": "assistant",
                "content": md(answer) if answer else say("chat.empty_reply") if done else "…"})
    return out


def describe_source(service: Service, source: str) -> tuple[str, bool, str | None]:
    """(a line about what answers, its thinking mode, the run's base model or None); a path
    the page may not read is Refused by the page's service before anything is looked at."""
    config = service.chat_source(source)
    if config is not None:
        template = say("chat.custom_template" if config.prompt_template else
                       "chat.chat_template")
        return (say("chat.run_line", name=Path(source).name, base=config.model_name,
                    template=template,
                    thinking=say("choice.on" if config.enable_thinking else "choice.off")),
                bool(config.enable_thinking), config.model_name)
    return say("chat.base_line", name=source), False, None


def thinking_toggle(service: Service, model_name: str, thinking: bool):
    """The thinking checkbox for a model: off, and not clickable, where its chat template has
    no thinking mode (it could not take effect)."""
    from studio.data import template_features

    try:
        features = template_features(service.data.tokenizer(model_name))
    except Exception:   # noqa: BLE001 - a model not loadable yet: leave the choice open
        return gr.update(value=thinking, interactive=True)
    if features.thinking:
        return gr.update(value=thinking, interactive=True, info=say("chat.thinking.info"))
    return gr.update(value=False, interactive=False, info=say("chat.no_thinking"))


# ---------------------------------------------------------------------------- wiring
def wire(t: ChatTab, service: Service) -> None:
    """Chat events; sources are refreshed by the app on page load and tab select."""

    @guard
    def pick(source, compare, switched: bool = False):
        """Label the chat for the source; a new source starts with empty histories (a reply
        must never sit under another model's name)."""
        if not source:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            line, thinking, base = describe_source(service, source)
        except Exception as e:   # noqa: BLE001
            return shout(say("chat.unreadable", source=source, error=error_text(e))), gr.skip(), \
                gr.skip(), gr.skip()
        cleared = {"value": []} if switched else {}
        toggle = thinking_toggle(service, base or source, thinking)
        if base is None:
            return (note(line), toggle,
                    gr.update(label=say("chat.label.base", name=source), **cleared),
                    gr.update(visible=False, **cleared))
        return (note(line), toggle,
                gr.update(label=say("chat.label.tuned", name=Path(source).name), **cleared),
                gr.update(visible=bool(compare), label=say("chat.label.base", name=base),
                          **cleared))

    t.source.change(lambda s, c: pick(s, c, switched=True), [t.source, t.compare],
                    [t.status, t.thinking, t.tuned, t.base], api_name=False)

    def answer(source, compare, tuned, base, system, temperature, top_p, max_new, thinking):
        """Stream the fine-tuned (or chosen) model's reply, then the base model's."""
        is_run = service.chat_source(source) is not None
        sides = [("tuned", False)] + ([("base", True)] if compare and is_run else [])
        histories = {"tuned": tuned, "base": base}
        for side, base_of_run in sides:
            who = say("chat.who.base") if base_of_run else Path(source).name if is_run else source
            if not service.loaded(source, base_of_run=base_of_run):
                compiles = service.hardware().has_cuda    # the decode step compiles at load
                yield tuned, base, note(say("chat.loading_gpu" if compiles else "chat.loading",
                                            who=who))
            try:
                loaded = service.model(source, base_of_run=base_of_run)
            except Exception as e:   # noqa: BLE001 - the page says why, the server stays up
                yield tuned, base, shout(say("chat.load_failed", who=who, error=first_line(e)))
                return
            from studio.inference import stream_reply

            history = histories[side]
            messages = to_messages(history, system)
            text, pieces, t0 = "", 0, time.time()
            reply = closing(stream_reply(loaded, messages, max_new_tokens=int(max_new),
                                         temperature=float(temperature), top_p=float(top_p),
                                         enable_thinking=bool(thinking), bounds=service.bounds))
            try:
                with reply as stream:    # a cancelled request closes it: the model stops
                    for piece in stream:
                        text += piece
                        pieces += 1
                        histories[side] = history + reply_bubbles(text, done=False)
                        tuned, base = histories["tuned"], histories["base"]
                        yield tuned, base, note(say("chat.answering", who=who, pieces=pieces))
            except Exception as e:   # noqa: BLE001
                yield tuned, base, shout(say("chat.failed", who=who, error=first_line(e)))
                return
            histories[side] = history + reply_bubbles(text, done=True)
            tuned, base = histories["tuned"], histories["base"]
            yield tuned, base, note(say("chat.answered", who=who, seconds=time.time() - t0),
                                    "ok")

    @guard
    def send(message, source, compare, tuned, base, *settings):
        message = (message or "").strip()
        if not source:
            yield message, tuned, base, shout(say("chat.pick_first"), "warn")
            return
        if not message:
            yield message, tuned, base, shout(say("chat.type_first"), "warn")
            return
        user = {"role": "user", "content": md(message)}      # shown as typed, never as HTML
        tuned = (tuned or []) + [user]
        if compare and service.chat_source(source) is not None:     # the base answers too
            base = (base or []) + [user]
        for tuned, base, status in answer(source, compare, tuned, base, *settings):
            yield "", tuned, base, status

    def up_to_last_question(history: list) -> list:
        users = [i for i, m in enumerate(history or []) if m["role"] == "user"]
        return history[:users[-1] + 1] if users else []

    @guard
    def regenerate(source, compare, tuned, base, *settings):
        tuned = up_to_last_question(tuned)
        if not tuned:
            yield tuned, base, shout(say("chat.nothing_to_redo"), "warn")
            return
        comparing = compare and service.chat_source(source) is not None
        base = up_to_last_question(base) or (list(tuned) if comparing else base)
        yield from answer(source, compare, tuned, base, *settings)

    settings = [t.system, t.temperature, t.top_p, t.max_new_tokens, t.thinking]
    chat_inputs = [t.message, t.source, t.compare, t.tuned, t.base] + settings
    chat_outputs = [t.message, t.tuned, t.base, t.status]
    gr.on([t.send.click, t.message.submit], send, chat_inputs, chat_outputs, api_name="chat",
          concurrency_limit=2)
    t.regenerate.click(regenerate, chat_inputs[1:], chat_outputs[1:], api_name="regenerate",
                       concurrency_limit=2)
    t.clear.click(lambda: ([], [], note(say("chat.cleared"))), None, [t.tuned, t.base, t.status],
                  api_name="clear_chat")
    t.compare.input(pick, [t.source, t.compare], [t.status, t.thinking, t.tuned, t.base],
                    api_name=False)
    wire_serving(t, service)


# ---------------------------------------------------------------------------- served at /v1
def wire_serving(t: ChatTab, service: Service) -> None:
    """The toggle that serves the chosen run at the page's /v1 (studio/serve/v1.py): what is
    served belongs to the server, so every tab shows it; a new choice in a tab whose box is
    ticked is served in its place."""
    from studio.serve.v1 import examples, model_id, served_for

    served = served_for(service)
    hidden = gr.update(visible=False)

    def shown(request: gr.Request):
        """(box, status, example) for what the server serves now."""
        table = served.table() if served.on else {}
        if not table:
            return False, note(say("serve.off")), hidden
        model, source = next(iter(table.items()))
        url = f"{request.headers.get('x-forwarded-proto', request.request.url.scheme)}://" \
              f"{request.headers.get('host', 'localhost')}/v1"
        python, curl = examples(url, model, served.needs_key)
        line = say("serve.on", source=model_id(source), url=url, model=model)
        return (True, note(line + (" " + say("serve.key") if served.needs_key else ""), "ok"),
                gr.update(value=f"{python}\n\n# or:\n# {curl}", visible=True))

    @guard
    def toggle(on, source, request: gr.Request):
        """Serve the run chosen in the chat at /v1, or stop serving."""
        why = None if served.mounted else "serve.unmounted"
        why = why or ("serve.refused" if served.refusal else None)
        if on and not why and not source:
            why = "serve.pick"
        if not on or why:
            served.serve([])
            return (False, shout(say(why), "warn"), hidden) if on else shown(request)
        try:
            service.chat_source(source)        # the page's service refuses a path outside
            served.serve([source])
        except Refused as e:
            return False, shout(error_text(e)), hidden
        except ValueError as e:
            return False, shout(say("serve.failed", source=source, error=error_text(e))), hidden
        return shown(request)

    @guard
    def follow(on, source, request: gr.Request):
        """A new choice is served if this tab's box is ticked; else show what is served."""
        if on and source and served.on:
            service.chat_source(source)        # the page's service refuses a path outside
            served.serve([source])
        return shown(request)

    t.serve.input(toggle, [t.serve, t.source], [t.serve, t.serve_status, t.serve_code],
                  api_name="serve_openai")
    t.source.change(follow, [t.serve, t.source], [t.serve, t.serve_status, t.serve_code],
                    api_name=False, show_progress="hidden")


def refresh_sources(service: Service, current: str | None = None):
    """The picker's choices now; the newest run is preselected unless a run is already picked
    (after training, the Chat tab opens on what was just trained)."""
    choices = sources(service)
    values = [v for _, v in choices]
    runs = [v for v in values if is_run_dir(Path(v))]
    if current in runs or (current and current not in values):
        value = current          # a run picked before, or a model typed in by hand
    else:
        value = runs[0] if runs else (current if current in values else values[0])
    return gr.update(choices=choices, value=value)
