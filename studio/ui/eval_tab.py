"""Evaluate tab: a run's base and fine-tuned models side by side, on its validation split or a
file, with the report the run folder keeps (studio.evaluate.evaluation through studio.service.actions, as
`python -m studio eval` does), and the evaluation set exported for EvalScope.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.evaluate.evaluation import EVAL
from studio.service.actions import Refused, Service
from studio.ui.common import guard, note, shout
from studio.ui.i18n import T, engine, error_text, say


@dataclass
class EvalTab:
    run: gr.Dropdown
    upload: gr.File
    data: gr.Textbox            # a file to evaluate on; empty: the run's validation split
    n_prompts: gr.Slider
    max_new_tokens: gr.Slider
    tasks: gr.Textbox
    judge_url: gr.Textbox
    judge_model: gr.Textbox
    start: gr.Button
    export: gr.Button
    exported: gr.File
    status: gr.HTML
    report: gr.HTML


# ---------------------------------------------------------------------------- layout
def build() -> EvalTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=340):
            run = gr.Dropdown([], label=T("eval.run"), elem_id="eval-run")
            upload = gr.File(label=T("eval.upload"), file_types=[".csv", ".json", ".jsonl",
                                                                  ".parquet"],
                             elem_id="eval-upload")
            data = gr.Textbox(label=T("eval.data"), placeholder=T("eval.data.placeholder"),
                              elem_id="eval-data")
            n_prompts = gr.Slider(1, 200, value=EVAL.n_prompts, step=1, label=T("eval.n_prompts"),
                                  elem_id="eval-n-prompts")
            max_new_tokens = gr.Slider(8, 1024, value=EVAL.max_new_tokens, step=8,
                                       label=T("eval.max_new_tokens"),
                                       elem_id="eval-max-new-tokens")
            with gr.Accordion(T("eval.more"), open=False):
                tasks = gr.Textbox(label=T("eval.tasks"), info=T("eval.tasks.info"),
                                   elem_id="eval-tasks")
                judge_url = gr.Textbox(label=T("eval.judge_url"), info=T("eval.judge_url.info"),
                                       elem_id="eval-judge-url")
                judge_model = gr.Textbox(label=T("eval.judge_model"), elem_id="eval-judge-model")
            with gr.Row():
                start = gr.Button(T("eval.start"), variant="primary", elem_id="eval-start")
                export = gr.Button(T("eval.export"), elem_id="eval-export")
            exported = gr.File(label=T("eval.exported"), visible=False, interactive=False)
        with gr.Column(scale=5, min_width=480):
            status = gr.HTML("", elem_id="eval-status")      # drawn on page load
            report = gr.HTML("", elem_id="eval-report")
    return EvalTab(run, upload, data, n_prompts, max_new_tokens, tasks, judge_url, judge_model,
                   start, export, exported, status, report)


def report_frame(report) -> str:
    """The saved report page, framed: its own styles stay out of the studio's."""
    from studio.evaluate.report import report_html

    page = html.escape(report_html(report), quote=True)
    # sandboxed: a srcdoc frame shares the studio's origin, so no script may run in it even if
    # a model's answer ever got through unescaped
    return (f'<iframe sandbox srcdoc="{page}" title="evaluation report" '
            'style="width:100%;height:900px;border:1px solid #e5e7eb;border-radius:6px">'
            "</iframe>")


def run_choices(service: Service) -> list[tuple[str, str]]:
    """Runs with an adapter to compare with their base."""
    return [(run.name, str(run.run_dir)) for run, _ in service.chat_runs()]


# ---------------------------------------------------------------------------- wiring
def wire(t: EvalTab, service: Service) -> None:
    @guard
    def picked(run_dir):
        if not run_dir:
            return gr.skip(), ""
        report = service.latest_report(run_dir)
        if report is None:
            return note(say("eval.none_yet", name=Path(run_dir).name)), ""
        return note(say("eval.latest", name=Path(run_dir).name, created=report.created), "ok"), \
            report_frame(report)

    t.run.change(picked, t.run, [t.status, t.report], api_name=False, show_progress="hidden")

    @guard
    def uploaded(file):
        return (service.data.keep_upload(file), None) if file else (gr.skip(), gr.skip())

    t.upload.upload(uploaded, t.upload, [t.data, t.upload], api_name=False)

    @guard
    def evaluate(run_dir, data, n_prompts, max_new_tokens, tasks, judge_url, judge_model,
                 progress=gr.Progress()):
        from studio.evaluate.evaluation import Judge

        # a closed accordion's text boxes arrive as None until they are first drawn
        data, tasks, judge_url, judge_model = (
            (text or "").strip() for text in (data, tasks, judge_url, judge_model))
        if not run_dir:
            return shout(say("eval.pick_first"), "warn"), gr.skip()
        if bool(judge_url) != bool(judge_model):
            return shout(say("eval.judge_both"), "warn"), gr.skip()
        judge = Judge(judge_url, judge_model) if judge_url else None
        try:
            report = service.evaluate(
                run_dir, data=data or None, n_prompts=int(n_prompts),
                max_new_tokens=int(max_new_tokens), tasks=tasks.split(), judge=judge,
                progress=lambda done, what: progress(done, desc=engine(what)))
        except Refused as e:
            return shout(error_text(e)), gr.skip()
        return note(say("eval.done", name=Path(run_dir).name), "ok"), report_frame(report)

    t.start.click(evaluate, [t.run, t.data, t.n_prompts, t.max_new_tokens, t.tasks, t.judge_url,
                             t.judge_model], [t.status, t.report], api_name="evaluate",
                  concurrency_limit=1, show_progress_on=t.report)   # the status stays readable

    @guard
    def export(run_dir, data):
        if not run_dir:
            return shout(say("eval.pick_first"), "warn"), gr.skip()
        try:
            path = service.export_evalscope(run_dir, (data or "").strip() or None)
        except Refused as e:
            return shout(error_text(e)), gr.skip()
        return note(say("eval.exported.note", path=str(path)), "ok"), \
            gr.update(value=str(path), visible=True)

    t.export.click(export, [t.run, t.data], [t.status, t.exported], api_name=False)


def refresh_runs(service: Service, current: str | None = None):
    choices = run_choices(service)
    values = [v for _, v in choices]
    return gr.update(choices=choices, value=current if current in values else
                     (values[0] if values else None))
