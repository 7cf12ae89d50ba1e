"""The studio's page: four tabs (data, model and hardware, train, chat) over one Service.

Each tab module builds its components (build -> a small dataclass) and then wires its events;
the config form is shared, since its fields are drawn across the data and model tabs. Page load
fills what needs the hardware probe and reattaches to a live run. At the end, a few endpoints
for programs (gradio_client): inspect_data, start_run, run_status, stop_run, list_runs,
chat_reply.
"""
from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path
from typing import Iterator

import gradio as gr

from backends import CHAT
from studio.models.catalog import default_model
from studio.config import FineTuningConfig
from studio.plan.presets import apply_preset, choose_preset
from studio.runs.store import is_run_dir
from studio.service.actions import Refused, Service
from studio.ui import (chat_tab, data_tab, eval_tab, export_tab, model_tab, runs_tab,
                       train_tab)
from studio.ui.common import code, empty_chart, failure, first_line, guard, note
from studio.ui.form import ConfigForm
from studio.ui.i18n import SWITCH, T, error_text, say

THEME = gr.themes.Soft(
    primary_hue="indigo", secondary_hue="slate", radius_size="md",
    font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])

CSS = """
.gradio-container { max-width: 1500px !important; width: 100% !important; margin: auto; }
#data-table th { min-width: 7em; }
/* a header keeps its words whole (a narrow column broke "LoRA r" into "LoR A r"); the table
   scrolls sideways instead */
#runs-table .header.text { word-break: normal !important; overflow-wrap: normal !important;
                           white-space: nowrap !important; }
#runs-diff { overflow-x: auto; }
#runs-diff-table th, #runs-diff-table td { overflow-wrap: anywhere; }
/* a chat pane's name sits above its messages, not over them as they scroll */
#chat-tuned [data-testid=block-label], #chat-base [data-testid=block-label] {
    position: static !important; margin-bottom: 4px; }
#studio-header h1 { margin-bottom: 0; }
#language-switch { align-self: flex-start; flex-wrap: nowrap; }
html[lang="en"] #language-en, html[lang^="zh"] #language-zh-CN { font-weight: 700;
    border-color: var(--color-accent); }
#studio-header p { margin-top: 2px; color: var(--body-text-color-subdued); }
.msg { padding: 9px 13px; border-radius: 8px; border: 1px solid; font-size: 14px; margin: 2px 0; }
.msg-ok { background: #f0fdf4; border-color: #86efac; color: #14532d; }
.msg-info { background: #eff6ff; border-color: #bfdbfe; color: #1e3a8a; }
.msg-warn { background: #fffbeb; border-color: #fcd34d; color: #78350f; }
.msg-error { background: #fef2f2; border-color: #fca5a5; color: #7f1d1d; }
.progress-bar { height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden; }
.progress-bar span { display: block; height: 100%; transition: width .6s;
                     background: linear-gradient(90deg, #6366f1, #22c55e); }
.progress-facts { margin-top: 6px; font-size: 14px; }
.mem-bar { position: relative; display: flex; height: 16px; background: #f1f5f9;
           border-radius: 4px; overflow: hidden; }
.mem-bar span { display: block; height: 100%; }
.mem-bar i { position: absolute; top: 0; bottom: 0; width: 3px; background: #0f172a; }
.mem-legend { font-size: 13px; margin: 6px 0; }
.mem { font-size: 14px; }
.mem-over { color: #7f1d1d; }
.examples-row { align-items: center; }
.inline-label { flex-grow: 0 !important; min-width: fit-content !important; }
/* a setting's checkbox as wide as the settings beside it (gradio gives it no min_width) */
[id^="field-"].block:has(input[type=checkbox]) { min-width: 190px !important; }
#cli-command .cm-content { font-size: 12px; }
.log-box { max-height: 280px; overflow-y: auto; display: flex; flex-direction: column-reverse;
           background: #0f172a; color: #e2e8f0; border-radius: 6px; padding: 8px 12px; }
table.plan { font-size: 13px; border-collapse: collapse; }
table.plan td, table.plan th { padding: 3px 10px; border-bottom: 1px solid #e5e7eb;
                               text-align: left; }
.sample { margin: 2px 0; }
table.samples { width: 100%; table-layout: fixed; }     /* a long unbroken answer wraps */
table.samples th:nth-child(-n+2) { width: 22%; }
table.samples td { overflow-wrap: anywhere; vertical-align: top; }
.log-box pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 12px;
               background: transparent; color: inherit; }
"""

# Gradio's overlay writes "processing | 2.7s" and "queue: 1/1" in English whatever the page's
# language: hidden, the progress itself (bar and our message) stays.
CSS += ".meta-text, .meta-text-center { display: none !important; }\n"

# The form is kept per browser tab (sessionStorage: a reload gets its own tab's form back, and
# an upload in a second tab leaves the first's alone) and as the newest of all tabs
# (localStorage: a new tab starts from it).
FORM_KEY = "qwen3-studio-config"
KEEP = f"""(kept) => {{ if (kept) {{ const text = JSON.stringify(kept);
  sessionStorage.setItem("{FORM_KEY}", text); localStorage.setItem("{FORM_KEY}", text); }} }}"""
RECALL = f"""() => {{ try {{ return [JSON.parse(sessionStorage.getItem("{FORM_KEY}") ||
  localStorage.getItem("{FORM_KEY}") || "null")]; }} catch (e) {{ return [null]; }} }}"""

RESIZE_CHARTS = "() => { setTimeout(() => window.dispatchEvent(new Event('resize')), 60); }"



def header(runs: str) -> str:
    """The page's title line; the browser translates its one catalog text."""
    return "# Qwen3 Studio\n" + T("page.header") + " " + code(runs)


def build_app(runs_dir: str | Path = "runs", allow=(), warning: str | None = None) -> gr.Blocks:
    """The page over one runs folder. What it reads and writes is confined to the runs folder,
    the assets, the model caches and the `allow` folders (studio.service.access.Confinement); `warning`
    (served without a login) shows as a banner on top."""
    service = Service.served(runs_dir, allow)
    form = ConfigForm(apply_preset(FineTuningConfig(model_name=default_model()),
                                   choose_preset(None)[0]))
    with gr.Blocks(title="Qwen3 Studio", analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown(header(_short_path(service.runs_dir)), elem_id="studio-header")
            with gr.Column(scale=0, min_width=190), gr.Row(elem_id="language-switch"):
                for label, locale in SWITCH:      # each in its own language
                    gr.Button(label, size="sm", min_width=80, elem_id=f"language-{locale}",
                              variant="secondary").click(
                        None, js=f"() => window.studioLanguage('{locale}')")
        if warning:
            gr.HTML(note(T("page.insecure"), "warn"), elem_id="insecure-banner")
        kept = gr.JSON(None, visible=False)      # the form, kept in the browser (KEEP, RECALL)
        with gr.Tabs() as tabs:
            with gr.Tab(T("page.tab.data"), id="data", elem_id="tab-data") as data_page:
                data = data_tab.build(form)
            with gr.Tab(T("page.tab.model"), id="model", elem_id="tab-model") as model_page:
                model = model_tab.build(form)
            with gr.Tab(T("page.tab.train"), id="train", elem_id="tab-train") as train_page:
                train = train_tab.build()
            with gr.Tab(T("page.tab.chat"), id="chat", elem_id="tab-chat") as chat_page:
                chat = chat_tab.build()
            with gr.Tab(T("page.tab.eval"), id="eval", elem_id="tab-eval") as eval_page:
                evaluation = eval_tab.build()
            with gr.Tab(T("page.tab.runs"), id="runs", elem_id="tab-runs") as runs_page:
                runs = runs_tab.build()
            with gr.Tab(T("page.tab.export"), id="export", elem_id="tab-export") as export_page:
                export = export_tab.build()
        for page in (data_page, model_page, train_page, chat_page, eval_page, runs_page,
                     export_page):
            # Plotly sizes a chart drawn in a hidden tab for a 700 px box; a resize event
            # makes it fit its container once the tab shows.
            page.select(None, js=RESIZE_CHARTS)

        follow, loaded = data_tab.wire(data, form, service)
        for event in model_tab.wire(model, form, service, demo, model_page):
            follow(event)
        auto = model_tab.auto_preset(model, form, service)
        for event in loaded:
            auto(event)
        train_tab.wire(train, form, service)
        chat_tab.wire(chat, service)
        eval_tab.wire(evaluation, service)
        export_tab.wire(export, service)
        refresh_runs, opened, resumed = runs_tab.wire(runs, form, service, tabs)
        follow(opened)          # a run's config went into the form: the data view follows
        resumed.then(lambda: train_tab.attach(service), None, train_tab.outputs(train),
                     api_name=False)

        # ---- the form kept in the browser: a reload keeps the dataset, mapping and settings
        states = [w for w in form.inputs if isinstance(w, gr.State)]
        gr.on(form.triggers + [w.change for w in states], keep_form(form), form.inputs, kept,
              trigger_mode="always_last", show_progress="hidden", api_name=False).then(
            None, kept, None, js=KEEP, api_name=False)
        # ---- page load: the boxes the server writes, first in their empty state in the page's
        # language (a box whose first value the browser translated went back to it whenever
        # the language changed), then the kept form and a live run over them
        painted = demo.load(first_paint, None, [
            data.status, data.histogram, train.status, train.chart, train.log, chat.status,
            evaluation.status, export.status], api_name=False, show_progress="hidden")
        restored = painted.then(restore_form(form), kept, form.inputs, js=RECALL,
                                api_name=False)
        follow(restored)
        restored.then(model_tab.why_now(service, form), [model.preset] + form.inputs,
                      model.preset_why, show_progress="hidden", api_name=False)

        # ---- page load: hardware probe, reattach to a live run (on its tab), chat sources
        demo.load(lambda: gr.Tabs(selected="train") if service.active() else gr.skip(), None,
                  tabs, api_name=False)
        demo.load(lambda: model_tab.on_load(model, form, service), None,
                  [model.hardware, model.backends, model.past_run], api_name=False)
        painted.then(lambda: train_tab.attach(service), None, train_tab.outputs(train),
                     api_name="attach")
        demo.load(lambda: chat_tab.refresh_sources(service), None, chat.source, api_name=False)
        chat_page.select(lambda s: chat_tab.refresh_sources(service, s), chat.source, chat.source,
                         api_name=False)
        eval_page.select(lambda r: eval_tab.refresh_runs(service, r), evaluation.run,
                         evaluation.run, api_name=False)
        export_page.select(lambda r: eval_tab.refresh_runs(service, r), export.run,
                           export.run, api_name=False)
        refresh_runs(runs_page.select(None, api_name=False))
        program_api(service, form)
    demo.service = service
    return demo


def first_paint() -> list:
    """The empty state of each box the server writes, in the request's language."""
    return [note(say("data.status.empty")), empty_chart(say("data.chart.empty"), 260),
            note(say("train.status.empty")), empty_chart(say("train.chart.empty"), 360),
            train_tab.log_html(""), note(say("chat.status.empty")),
            note(say("eval.status.empty")), note(say("export.status.empty"))]


def keep_form(form: ConfigForm):
    """The form as a dict for the browser's storage (what a reload puts back)."""
    def keep(*values):
        try:
            return form.to_config(*values)[0].to_dict()
        except Exception:   # noqa: BLE001 - a half-typed value: keep what was kept before
            return gr.skip()
    return keep


def restore_form(form: ConfigForm):
    """The kept form back into the widgets, or nothing on a first visit (or after the config
    fields changed in a way the kept values no longer fit)."""
    def restore(kept):
        try:
            return form.values(FineTuningConfig.from_dict(kept)) if kept else \
                [gr.skip()] * len(form.inputs)
        except Exception:   # noqa: BLE001
            return [gr.skip()] * len(form.inputs)
    return restore


def _short_path(path: Path) -> str:
    """The runs folder as typed: relative when it is under the working folder."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


# ---------------------------------------------------------------------------- for programs
def program_api(service: Service, form: ConfigForm) -> None:
    """Endpoints that take plain values (a path, YAML text, a run folder) for gradio_client."""

    def inspect_data(path: str, model_name: str = "") -> dict:
        """The dataset at `path` as the Data tab shows it: rows, format, mapping, split,
        token lengths and problems."""
        from studio.data import DataError

        config = form.defaults.replace(data_path=path,
                                       model_name=model_name or form.defaults.model_name)
        try:
            a = service.data.analyse(config)
        except DataError as e:
            raise failure(error_text(e)) from None
        r = a.report
        return {"rows": len(a.dataset), "columns": list(a.dataset.column_names),
                "format": a.fmt.name if a.fmt else None,
                "mapping": a.fmt.mapping if a.fmt else {},
                "role_map": a.fmt.role_map if a.fmt else {}, "error": a.error,
                "n_train": r.n_train if r else 0, "n_eval": r.n_eval if r else 0,
                "n_truncated": r.n_truncated if r else 0,
                "lengths": r.lengths if r else [],
                # orjson takes only plain str keys: a problem's name is a Text
                "problems": {str(p): n for p, n in r.problems.items()} if r else {}}

    def start_run(config_yaml: str, allow_over_memory: bool = False) -> dict:
        """Start a run from a YAML config (FineTuningConfig fields); refused with the reason."""
        try:
            config = FineTuningConfig.from_yaml(config_yaml or "")
            job = service.start(config, allow_over_memory=allow_over_memory)
        except Refused as e:
            raise failure(error_text(e)) from None
        except ValueError as e:
            raise failure(error_text(e)) from None
        return {"run": str(job.run_dir), **job.status.to_dict()}

    def run_status(run: str = "") -> dict:
        """A run's state, reason and its train/eval points ('' = the live or latest run)."""
        run_dir = run or str(service.latest() or "")
        if not run_dir:
            raise failure("there is no run yet")
        service.paths.path(run_dir)
        if not is_run_dir(Path(run_dir)):
            raise failure(f"{run_dir} is not a run: no such run in the studio's folders")
        watch = train_tab.new_watch(run_dir)
        job = service.attach(run_dir)
        status = job.status
        events, _ = job.events_since(0)
        train_tab.absorb(watch, events)
        return {"run": run_dir, **status.to_dict(), "train": watch["train"], "eval": watch["eval"],
                "message": watch["message"]}

    def stop_run(run: str = "") -> dict:
        """Ask a run to stop ('' = the live one); it saves an adapter and ends."""
        run_dir = run or str(service.active() or "")
        if not run_dir:
            raise failure("nothing is training")
        service.paths.path(run_dir)
        if not is_run_dir(Path(run_dir)):
            raise failure(f"{run_dir} is not a run: no such run, so nothing to stop")
        service.stop(run_dir)
        return {"run": run_dir, "stopping": True}

    def list_runs() -> list:
        """Every run, newest first, with its state."""
        return [run.to_dict() for run in service.runs()]

    def chat_reply(source: str, message: str, max_new_tokens: int = 64,
                   temperature: float = CHAT.temperature, thinking: bool = False) -> Iterator[str]:
        """The reply of a run (folder) or base model to one message, streamed as it grows."""
        from studio.inference import stream_reply

        try:
            loaded = service.model(source)
        except Exception as e:   # noqa: BLE001
            raise failure(f"could not load {source}: {first_line(e)}") from None
        text = ""
        with closing(stream_reply(loaded, [{"role": "user", "content": message}],
                                  max_new_tokens=max_new_tokens, temperature=temperature,
                                  enable_thinking=thinking, bounds=service.bounds)) as reply:
            for piece in reply:      # a cancelled request closes it: the model stops
                text += piece
                yield text

    for fn in (inspect_data, start_run, run_status, stop_run, list_runs, chat_reply):
        gr.api(guard(fn), api_name=fn.__name__, concurrency_limit=None if fn is not chat_reply else 2)
