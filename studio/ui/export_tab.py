"""Export tab: a run taken out as merged weights, a LoRA adapter, a GGUF or an Ollama model
(studio.export through studio.service.actions, as `python -m studio export` does), sized before it
starts, into a new folder under the run's exports/, with the commands that run it.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.export import DEFAULT_QUANT, FORMATS, QUANTS
from studio.service.actions import Refused, Service
from studio.ui.common import guard, note, shout
from studio.ui.i18n import T, engine, error_text, say


@dataclass
class ExportTab:
    run: gr.Dropdown
    format: gr.Radio
    quant: gr.Radio
    estimate: gr.HTML
    start: gr.Button
    status: gr.HTML
    commands: gr.Code
    files: gr.HTML


# ---------------------------------------------------------------------------- layout
def build() -> ExportTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=340):
            run = gr.Dropdown([], label=T("export.run"), elem_id="export-run")
            fmt = gr.Radio([(T(f"export.format.{f}"), f) for f in FORMATS], value="gguf",
                           label=T("export.format"), elem_id="export-format")
            quant = gr.Radio([(T(f"export.quant.{q}"), q) for q in QUANTS],
                             value=DEFAULT_QUANT, label=T("export.quant"),
                             elem_id="export-quant")
            estimate = gr.HTML("", elem_id="export-estimate")
            start = gr.Button(T("export.start"), variant="primary", elem_id="export-start")
        with gr.Column(scale=5, min_width=480):
            status = gr.HTML("", elem_id="export-status")    # drawn on page load
            commands = gr.Code(label=T("export.commands"), language="shell", interactive=False,
                               wrap_lines=True, elem_id="export-commands")
            files = gr.HTML("", elem_id="export-files")
    return ExportTab(run, fmt, quant, estimate, start, status, commands, files)


def files_table(files: dict) -> str:
    rows = "".join(f"<tr><td><code>{html.escape(name)}</code></td>"
                   f"<td style='text-align:right'>{_size(size)}</td></tr>"
                   for name, size in files.items())
    return f"<table class='export-files'>{rows}</table>"


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def shell_lines(commands: dict) -> str:
    return "\n".join(f"# {tool}\n{command}\n" for tool, command in commands.items())


# ---------------------------------------------------------------------------- wiring
def wire(t: ExportTab, service: Service) -> None:
    @guard
    def sized(run_dir, fmt, quant):
        """What the export will take and where it goes, before it starts."""
        if not run_dir:
            return ""
        quant = quant if fmt in ("gguf", "ollama") else None
        try:
            size, folder = service.export_estimate(run_dir, fmt, quant)
        except Refused as e:
            return note(error_text(e), "warn")
        where = str(Path(folder).relative_to(service.runs_dir.parent)
                    if Path(folder).is_relative_to(service.runs_dir.parent) else folder)
        if size is None:
            return note(say("export.size_unknown", folder=where))
        return note(say("export.size", size=f"{size / 2**20:,.0f}", folder=where))

    def quant_shown(fmt):
        return gr.update(visible=fmt in ("gguf", "ollama"))

    t.format.change(quant_shown, t.format, t.quant, api_name=False)
    for event in (t.run.change, t.format.change, t.quant.change):
        event(sized, [t.run, t.format, t.quant], t.estimate, api_name=False,
              show_progress="hidden")

    @guard
    def export(run_dir, fmt, quant, progress=gr.Progress()):
        if not run_dir:
            return shout(say("export.pick_first"), "warn"), gr.skip(), gr.skip()
        quant = quant if fmt in ("gguf", "ollama") else None
        try:
            result = service.export(run_dir, fmt, None, quant,
                                    lambda done, what: progress(done, desc=engine(what)))
        except Refused as e:
            return shout(error_text(e)), "", ""
        return (note(say("export.done", name=Path(run_dir).name, folder=result.folder,
                         size=f"{result.size / 2**20:,.1f}", seconds=result.seconds), "ok"),
                shell_lines(result.commands), files_table(result.files))

    t.start.click(export, [t.run, t.format, t.quant], [t.status, t.commands, t.files],
                  api_name="export_run", concurrency_limit=1, show_progress_on=t.files).then(
        sized, [t.run, t.format, t.quant], t.estimate, api_name=False, show_progress="hidden")
