"""Runs tab: every run of the runs folder in one sortable table; several overlaid on one chart
with their configs diffed; one opened into the form, resumed, renamed or deleted.

What it shows comes from studio.runs.history (read from the run folders, so runs made by the CLI
or Python are here too); what it changes goes through studio.service.actions, which refuses to rename
or delete a run that is training, with the same words as `python -m studio runs`.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.service.actions import Refused, Service
from studio.ui.common import chart_layout, empty_chart, guard, note, run_choices, shout, toast
from studio.ui.form import ConfigForm
from studio.ui.i18n import T, error_text, say, state_word

# table column -> catalog key of its header (Dataframe headers are not translated in the
# browser, so the server writes them in the page's language)
COLUMNS = {"name": "runs.col.name", "state": "runs.col.state", "model": "runs.col.model",
           "dataset": "runs.col.dataset", "rows": "runs.col.rows", "lora_r": "runs.col.lora_r",
           "learning_rate": "runs.col.lr", "epochs": "runs.col.epochs",
           "batch": "runs.col.batch", "train_loss": "runs.col.train_loss",
           "eval_loss": "runs.col.eval_loss", "minutes": "runs.col.minutes",
           "tokens_per_s": "runs.col.speed", "peak_memory_gb": "runs.col.peak"}
X_AXES = {"step": "runs.x.step", "tokens": "runs.x.tokens", "epoch": "runs.x.epoch"}
COLOURS = ["#6366f1", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#84cc16"]


@dataclass
class RunsTab:
    refresh: gr.Button
    table: gr.Dataframe
    compare: gr.CheckboxGroup     # runs to overlay and diff
    x_axis: gr.Radio
    chart: gr.Plot
    diff: gr.HTML
    run: gr.Dropdown              # the run to act on
    open_config: gr.Button
    resume: gr.Button
    new_name: gr.Textbox
    rename: gr.Button
    sure: gr.Checkbox
    delete: gr.Button
    status: gr.HTML


# ---------------------------------------------------------------------------- layout
def build() -> RunsTab:
    with gr.Row(equal_height=True):
        gr.Markdown("### " + T("runs.h.all"))
        refresh = gr.Button(T("runs.refresh"), size="sm", scale=0, min_width=110,
                            elem_id="runs-refresh")
    table = gr.Dataframe(interactive=False, wrap=True, max_height=340, elem_id="runs-table",
                         show_label=False)
    gr.Markdown("### " + T("runs.h.compare"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            compare = gr.CheckboxGroup([], label=T("runs.compare"), elem_id="runs-compare")
            x_axis = gr.Radio([(T(k), v) for v, k in X_AXES.items()], value="step",
                              label=T("runs.x"), elem_id="runs-x")
            chart = gr.Plot(show_label=False, elem_id="runs-chart")   # drawn on opening
        with gr.Column(scale=2):
            diff = gr.HTML("", elem_id="runs-diff")
    gr.Markdown("### " + T("runs.h.one"))
    with gr.Row(equal_height=True):
        run = gr.Dropdown([], label=T("runs.run"), scale=4, elem_id="runs-run")
        open_config = gr.Button(T("runs.open"), scale=1, elem_id="runs-open")
        resume = gr.Button(T("runs.resume"), scale=1, elem_id="runs-resume")
    with gr.Row(equal_height=True):
        new_name = gr.Textbox(label=T("runs.new_name"), scale=3, elem_id="runs-new-name")
        rename = gr.Button(T("runs.rename"), scale=1, elem_id="runs-rename")
        sure = gr.Checkbox(False, label=T("runs.sure"), scale=2, elem_id="runs-sure")
        delete = gr.Button(T("runs.delete"), variant="stop", scale=1, elem_id="runs-delete")
    status = gr.HTML("", elem_id="runs-status")
    return RunsTab(refresh, table, compare, x_axis, chart, diff, run, open_config, resume,
                   new_name, rename, sure, delete, status)


# ---------------------------------------------------------------------------- drawing
def table_of(service: Service):
    """Every run as a row: what it trained, how it ended, how fast and how big."""
    import pandas as pd

    from studio.runs.history import summaries

    rows = []
    for s in summaries(service.runs_dir):
        settings = s.settings
        rows.append({
            "name": s.name, "state": state_word(s.state), "model": Path(s.model).name,
            "dataset": s.dataset, "rows": s.rows, "lora_r": settings.get("lora_r"),
            "learning_rate": settings.get("learning_rate"),
            "epochs": settings.get("max_steps") and say("runs.steps", n=settings["max_steps"])
            or settings.get("num_train_epochs"),
            "batch": f"{settings.get('batch_size')} × {settings.get('gradient_accumulation_steps')}"
            if settings else None,
            "train_loss": _round(s.train_loss, 4), "eval_loss": _round(s.eval_loss, 4),
            "minutes": _round(s.seconds / 60 if s.seconds else None, 1),
            "tokens_per_s": _round(s.tokens_per_s, 0), "peak_memory_gb": _round(s.peak_memory_gb, 2)})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.rename(columns={c: say(k) for c, k in COLUMNS.items()})


def _round(value, digits: int):
    return None if value is None else round(value, digits)


def overlay(run_dirs: list[str], x: str):
    """The runs' train losses (lines) and eval losses (dashed, diamonds) on one chart."""
    import plotly.graph_objects as go

    from studio.runs.history import curves

    if not run_dirs:
        return empty_chart(say("runs.chart.empty"), 340)
    column = {"step": 0, "tokens": 1, "epoch": 2}[x]
    fig = go.Figure()
    for i, run_dir in enumerate(run_dirs):
        c, colour, name = curves(run_dir), COLOURS[i % len(COLOURS)], Path(run_dir).name
        fig.add_trace(go.Scatter(x=[p[column] for p in c.train], y=[p[3] for p in c.train],
                                 mode="lines", name=say("runs.chart.train", run=name),
                                 line=dict(color=colour)))
        if c.eval:
            fig.add_trace(go.Scatter(x=[p[column] for p in c.eval], y=[p[3] for p in c.eval],
                                     mode="lines+markers", name=say("runs.chart.eval", run=name),
                                     line=dict(color=colour, dash="dash"),
                                     marker=dict(symbol="diamond", size=8)))
    fig.update_xaxes(title_text=say(X_AXES[x]))
    fig.update_yaxes(title_text=say("train.chart.loss_axis"))
    return chart_layout(fig, 340)


def diff_html(run_dirs: list[str]) -> str:
    """The config fields where the compared runs differ, one column a run."""
    from studio.runs.history import config_diff

    if len(run_dirs) < 2:
        return note(say("runs.diff.pick"))
    fields = config_diff([Path(d) for d in run_dirs])
    if not fields:
        return note(say("runs.diff.same"), "ok")
    head = "".join(f"<th>{html.escape(Path(d).name)}</th>" for d in run_dirs)
    rows = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(
        f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>"
        for name, values in fields.items())
    return (f'<table class="plan" id="runs-diff-table"><tr><th>{html.escape(say("runs.diff.field"))}'
            f"</th>{head}</tr>{rows}</table>")


# ---------------------------------------------------------------------------- wiring
def wire(t: RunsTab, form: ConfigForm, service: Service, tabs: gr.Tabs):
    """Wire the tab; returns (refresh(event), the Resume event) for the app to chain."""

    @guard
    def compared(chosen, x):
        return overlay(chosen or [], x or "step"), diff_html(chosen or [])

    @guard
    def shown(chosen=None, x=None):
        """The table, the pickers and the comparison, drawn again in the page's language."""
        choices = run_choices(service)
        names = {value for _, value in choices}
        keep = [c for c in (chosen or []) if c in names]
        return (table_of(service), gr.update(choices=choices, value=keep),
                gr.update(choices=choices), *compared(keep, x))

    listed = [t.table, t.compare, t.run, t.chart, t.diff]

    def refresh(event):
        return event.then(shown, [t.compare, t.x_axis], listed, api_name=False)

    t.refresh.click(shown, [t.compare, t.x_axis], listed, api_name="list_runs_table")

    gr.on([t.compare.change, t.x_axis.change], compared, [t.compare, t.x_axis],
          [t.chart, t.diff], api_name=False)

    @guard
    def open_config(run_dir):
        if not run_dir:
            return [shout(say("runs.pick_first"), "warn")] + [gr.skip()] * (len(form.inputs) + 1)
        config = service.run_config(run_dir)
        toast(say("runs.opened", name=Path(run_dir).name))
        return [note(say("runs.opened", name=Path(run_dir).name), "ok"),
                gr.Tabs(selected="model")] + form.values(config)

    opened = t.open_config.click(open_config, t.run, [t.status, tabs] + form.inputs,
                                 api_name=False)

    @guard
    def resume(run_dir):
        if not run_dir:
            return shout(say("runs.pick_first"), "warn"), gr.skip()
        try:
            service.resume(run_dir)
        except Refused as e:
            return shout(error_text(e)), gr.skip()
        return note(say("train.resuming", name=Path(run_dir).name), "ok"), \
            gr.Tabs(selected="train")

    resumed = t.resume.click(resume, t.run, [t.status, tabs], api_name=False)

    @guard
    def rename(run_dir, new_name, chosen):
        if not run_dir:
            return [shout(say("runs.pick_first"), "warn")] + [gr.skip()] * 4
        try:
            target = service.rename(run_dir, new_name or "")
        except Refused as e:
            return [shout(error_text(e))] + [gr.skip()] * 4
        return [note(say("runs.renamed", old=Path(run_dir).name, new=target.name), "ok"),
                *shown(chosen)[:2], gr.update(choices=run_choices(service), value=str(target)),
                ""]

    t.rename.click(rename, [t.run, t.new_name, t.compare],
                   [t.status, t.table, t.compare, t.run, t.new_name], api_name=False)

    @guard
    def delete(run_dir, sure, chosen):
        if not run_dir:
            return [shout(say("runs.pick_first"), "warn")] + [gr.skip()] * 4
        if not sure:
            return [shout(say("runs.delete.confirm"), "warn")] + [gr.skip()] * 4
        try:
            service.delete(run_dir)
        except Refused as e:
            return [shout(error_text(e))] + [gr.skip()] * 4
        table, compare, *_ = shown(chosen)
        return [note(say("runs.deleted", name=Path(run_dir).name), "ok"), table, compare,
                gr.update(choices=run_choices(service), value=None), False]

    t.delete.click(delete, [t.run, t.sure, t.compare],
                   [t.status, t.table, t.compare, t.run, t.sure], api_name=False)
    return refresh, opened, resumed
