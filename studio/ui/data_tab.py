"""Data tab: load a dataset and see it as training will.

Drop a file (or give a path or a Hub id, or click an example); the rows show as a paginated
table, the detected shape fills the column-mapping dropdowns (editable), one row is rendered
through the chat template with the trained tokens highlighted, and a histogram shows the token
lengths against max_seq_length, with the split and every problem found counted.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.data.analysis import DATA_FIELDS
from studio.data.readers import examples
from studio.service.actions import Service
from studio.ui.common import chart_layout, code, empty_chart, guard, md, note, shout
from studio.ui.form import ConfigForm
from studio.ui.i18n import T, engine, error_text, field_help, say

PAGE = 10


def roles() -> list[str]:
    """Every role a column can be mapped to, from the data module's shapes."""
    from studio.data import SHAPES

    out = []
    for shape in SHAPES.values():
        out += [r for r in shape.required + shape.optional if r not in out]
    return out


def role_headers() -> list[str]:
    return [say("data.role_tags.tag"), say("data.role_tags.role")]


def no_rows():
    import pandas as pd

    return pd.DataFrame({say("data.no_rows"): []})


@dataclass
class DataTab:
    file: gr.File
    path: gr.Textbox
    load: gr.Button
    cancel: gr.Button          # ends an analysis under way
    example_buttons: list
    status: gr.HTML
    summary: gr.Markdown
    table: gr.Dataframe
    page: gr.Number
    prev: gr.Button
    next: gr.Button
    format_md: gr.Markdown
    mapping: list
    role_tags: gr.Dataframe
    example_row: gr.Number
    example_info: gr.Markdown
    example: gr.HighlightedText
    histogram: gr.Plot
    stats: gr.Markdown
    template_note: gr.HTML     # the system prompt the template adds, what the template drops
    keep_default: object       # the template_system_prompt widget
    thinking: object           # the enable_thinking widget (off where the template has none)


# ---------------------------------------------------------------------------- layout
def build(form: ConfigForm) -> DataTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=340):
            gr.Markdown(T("data.h.choose"))
            file = gr.File(label=T("data.upload"), file_types=[".csv", ".tsv", ".json", ".jsonl",
                                                               ".parquet"], height=130,
                           elem_id="data-upload")
            with gr.Row(equal_height=True):
                path = gr.Textbox(label=T("data.path"), placeholder=T("data.path.placeholder"),
                                  scale=5, elem_id="data-path")
                load = gr.Button(T("data.load"), scale=1, min_width=70, elem_id="data-load")
                cancel = gr.Button(T("data.cancel"), scale=1, min_width=70, variant="stop",
                                   elem_id="data-cancel")
            form.adopt("data_path", path)
            with gr.Row(equal_height=True, elem_classes="examples-row"):
                gr.Markdown(T("data.examples"), elem_classes="inline-label")
                buttons = [gr.Button(p.stem.replace("example_", ""), size="sm", min_width=60,
                                     elem_id=f"example-{p.stem}") for p in examples()]
            status = gr.HTML("", elem_id="data-status")     # drawn on page load
            gr.Markdown(T("data.h.shape"))
            format_md = gr.Markdown("", elem_id="data-format")
            form.render(["dataset_format"])
            mapping = [gr.Dropdown(choices=[], label=T(f"data.role.{role}"), visible=False,
                                   allow_custom_value=False, elem_id=f"map-{role}")
                       for role in roles()]
            form.adopt("column_mapping", gr.State({}))
            form.adopt("role_mapping", gr.State({}))
            role_tags = gr.Dataframe(headers=role_headers(), datatype=["str", "str"],
                                     col_count=(2, "fixed"), interactive=True, visible=False,
                                     elem_id="data-role-tags", label=T("data.role_tags"))
            template_note = gr.HTML("", elem_id="data-template-note")
            form.render(["template_system_prompt"], visible=False)
            with gr.Accordion(T("data.custom_template"), open=False):
                form.render(["prompt_template", "system_prompt"])
        with gr.Column(scale=7, min_width=480):
            gr.Markdown(T("data.h.rows"))
            summary = gr.Markdown("", elem_id="data-summary")
            table = gr.Dataframe(no_rows(), interactive=False, wrap=True, max_height=360,
                                 elem_id="data-table", show_label=False)
            with gr.Row(equal_height=True):
                prev = gr.Button(T("data.prev"), size="sm", min_width=90)
                page = gr.Number(value=1, precision=0, label=T("data.page"), min_width=80,
                                 scale=0, show_label=False, container=False, elem_id="data-page")
                nxt = gr.Button(T("data.next"), size="sm", min_width=90)
            gr.Markdown(T("data.h.example"))
            with gr.Row(equal_height=True):
                example_row = gr.Number(value=0, precision=0, label=T("data.row"), min_width=90,
                                        scale=0)
                form.render(["enable_thinking", "train_on_prompt"])
            example_info = gr.Markdown("", elem_id="data-example-info")
            example = gr.HighlightedText(show_legend=True, show_inline_category=False,
                                         combine_adjacent=True, label=T("data.rendered"),
                                         elem_id="data-example", show_label=False)
            gr.Markdown(T("data.h.lengths"))
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    histogram = gr.Plot(None,        # drawn on page load, in its language
                                        show_label=False, elem_id="data-histogram")
                with gr.Column(scale=2, min_width=220):
                    form.render(["max_seq_length", "val_size"])
                    stats = gr.Markdown("", elem_id="data-stats")
    return DataTab(file, path, load, cancel, buttons, status, summary, table, page, prev, nxt, format_md,
                   mapping, role_tags, example_row, example_info, example, histogram, stats,
                   template_note, form.widgets["template_system_prompt"],
                   form.widgets["enable_thinking"])


# ---------------------------------------------------------------------------- handlers
def describe(t: DataTab, form: ConfigForm, service: Service, values, page, row,
             progress=None) -> list:
    """Every display of the tab for the dataset and settings in the form."""
    from studio.data import DataError
    from studio.models.local import local_model_path, needs_building

    config, _ = form.to_config(*values)
    if not config.data_path:
        return cleared(t, note(say("data.status.empty")))
    if progress is not None and needs_building(config.model_name):
        # the bundled model's tokenizer is needed to show the data: a one-time build, shown
        local_model_path(config.model_name, lambda done, what: progress(
            done, desc=say("data.preparing", model=config.model_name, what=what)))
    try:
        a = service.data.analyse(config)
    except DataError as e:
        return cleared(t, shout(error_text(e)))
    ds = a.dataset
    out = {t.status: note(say("data.loaded", name=Path(a.path).name, rows=len(ds)) + (
        "" if a.error else say("data.ready")), "ok" if not a.error else "info")}
    if a.error:
        out[t.status] = shout(engine(a.error))
    out[t.summary] = say("data.summary", rows=len(ds), columns=len(ds.column_names)) + ", ".join(
        f"{code(c)} ({getattr(f, 'dtype', type(f).__name__.lower())})" for c, f in ds.features.items())
    pages = max(1, -(-len(ds) // PAGE))
    page = min(max(1, int(page or 1)), pages)
    out[t.table] = preview(service, a.path, page)
    out[t.page] = page
    out.update(mapping_updates(t, a, ds.column_names))
    out.update(template_updates(t, a, config))
    out.update(example_updates(t, a, config, row))
    out.update(length_updates(t, a, config))
    return [out.get(c, gr.skip()) for c in display_outputs(t)]


def cleared(t: DataTab, status: str) -> list:
    """No rows to show (none loaded, or the file cannot be read): only the status speaks."""
    out = {t.status: status, t.summary: "", t.table: no_rows(), t.page: 1, t.format_md: "",
           t.role_tags: gr.update(value=None, visible=False), t.example_info: "", t.example: None, t.stats: "",
           t.histogram: empty_chart(say("data.chart.empty"), 260), t.template_note: "",
           t.keep_default: gr.update(visible=False), t.thinking: gr.update(interactive=True),
           **{d: gr.update(visible=False, value="") for d in t.mapping}}
    return [out[c] for c in display_outputs(t)]


def display_outputs(t: DataTab) -> list:
    return [t.status, t.summary, t.table, t.page, t.format_md, *t.mapping, t.role_tags,
            t.example_info, t.example, t.histogram, t.stats, t.template_note, t.keep_default,
            t.thinking]


def preview(service: Service, path: str, page: int):
    from studio.ui.preview import dataset_preview

    ds = service.data.dataset(path)
    return dataset_preview(ds, (page - 1) * PAGE, PAGE)


def mapping_updates(t: DataTab, a, columns) -> dict:
    from studio.data import SHAPES

    choices = [(say("data.none"), "")] + [(c, c) for c in columns]
    if a.fmt is None:            # not detected: offer the common shapes' roles to map by hand
        shown = {r for s in ("instruction", "messages", "text") for r in
                 SHAPES[s].required + SHAPES[s].optional}
        mapping, head = {}, say("data.undetected")
    elif a.fmt.name == "template":
        shown, mapping = set(), {}
        head = say("data.template_shape", reason=md(engine(a.fmt.reason)))
    else:
        shape = SHAPES[a.fmt.name]
        shown, mapping = set(shape.required + shape.optional), a.fmt.mapping
        head = say("data.detected", name=md(a.fmt.name), reason=md(engine(a.fmt.reason)))
    out = {t.format_md: head}
    for role, dropdown in zip(roles(), t.mapping):
        out[dropdown] = gr.update(choices=choices, value=mapping.get(role, ""),
                                  visible=role in shown)
    if a.fmt is not None and a.fmt.role_map:
        import pandas as pd

        out[t.role_tags] = gr.update(value=pd.DataFrame(list(a.fmt.role_map.items()),
                                                        columns=role_headers()), visible=True)
    else:
        out[t.role_tags] = gr.update(value=None, visible=False)
    return out


def template_updates(t: DataTab, a, config) -> dict:
    """What the model's chat template does to these rows that the data does not say: the system
    prompt it adds by itself (keep or drop it), what it cannot render, and whether thinking
    can take effect at all."""
    from studio.data import template_features

    if a.tokenizer is None or (a.fmt is not None and a.fmt.name in ("text", "template",
                                                                      "segments")):
        return {t.template_note: "", t.keep_default: gr.update(visible=False),
                t.thinking: gr.update(interactive=True)}
    features = template_features(a.tokenizer)
    lines, kind = [], "info"
    if features.default_system:
        used = say("data.system.replaced") if config.system_prompt else \
            say("data.system.dropped") if config.template_system_prompt == "drop" else \
            say("data.system.kept")
        lines.append(say("data.system.note", prompt=features.default_system, used=used))
        kind = "warn" if config.template_system_prompt == "keep" and not config.system_prompt \
            else "info"
    for advice in (a.report.advice if a.report else []):
        lines.append(engine(advice))
        kind = "warn"
    thinking = gr.update(interactive=features.thinking, info=(
        field_help("enable_thinking") if features.thinking else say("data.no_thinking")))
    if not features.thinking:
        thinking["value"] = False
    return {t.template_note: note("\n".join(lines), kind) if lines else "",
            t.keep_default: gr.update(visible=bool(features.default_system)),
            t.thinking: thinking}


def example_updates(t: DataTab, a, config, row) -> dict:
    from studio.data import render_segments, tokenize_row

    if a.fmt is None or a.tokenizer is None:
        return {t.example: None, t.example_info: say("data.example.wait")}
    n = len(a.dataset)
    row = min(max(0, int(row or 0)), n - 1)
    try:
        record = a.dataset[row]
        tok = tokenize_row(a.tokenizer, record, a.fmt, config)
        segments = whole_characters(render_segments(a.tokenizer, record, a.fmt, config),
                                    tok.truncated)
    except Exception as e:   # noqa: BLE001 - a row that cannot render is shown, not fatal
        return {t.example: None, t.example_info: say("data.example.broken", row=row, error=md(e))}
    trained = sum(tok.assistant_masks)
    info = say("data.example.info", row=row, rows=n, tokens=len(tok.input_ids), trained=trained,
               thinking=say("choice.on" if config.enable_thinking else "choice.off"))
    if tok.truncated:
        info += say("data.example.cut", limit=config.max_seq_length)
    if not trained:
        info += say("data.example.nothing")
    kinds = {True: say("data.trained"), False: say("data.masked")}
    # the legend names the colours in the page's language
    colours = {kinds[True]: "#22c55e", kinds[False]: "#e5e7eb"}
    return {t.example: gr.update(value=[(text, kinds[bool(on)]) for text, on in segments],
                                 color_map=colours),
            t.example_info: info}


def whole_characters(segments: list, truncated: bool) -> list:
    """A row cut at max_seq_length may end inside a character (Chinese takes several bytes a
    character, a token may hold part of one): show it without the half that decodes as �."""
    if truncated and segments:
        segments = segments[:-1] + [(segments[-1][0].rstrip("\ufffd"), segments[-1][1])]
    return segments


def length_updates(t: DataTab, a, config) -> dict:
    import plotly.graph_objects as go

    r = a.report
    if r is None:
        return {t.histogram: empty_chart(say("data.chart.unprepared"), 260), t.stats: ""}
    limit = config.max_seq_length
    fig = go.Figure(go.Histogram(x=r.lengths, nbinsx=min(40, max(5, len(set(r.lengths)))),
                                 marker_color="#6366f1", name="rows"))
    fig.add_vline(x=limit, line_dash="dash", line_color="#dc2626",
                  annotation_text=f"max_seq_length {limit}", annotation_position="top")
    chart_layout(fig, 260, title=dict(text=say("data.chart.title", cut=r.n_truncated,
                                               rows=len(r.lengths)), font_size=13),
                 xaxis_title=say("data.chart.x"), yaxis_title=say("data.chart.y"), bargap=0.05,
                 showlegend=False)
    if max(r.lengths) < limit / 4:
        fig.update_xaxes(range=[0, max(r.lengths) * 1.3])
        fig.add_annotation(text=f"max_seq_length {limit} →", xref="paper", yref="paper", x=1,
                           y=1, showarrow=False, font_color="#dc2626")
    lines = [say("data.split", train=r.n_train, eval=r.n_eval, val_size=f"{config.val_size:g}"),
             say("data.lengths", min=min(r.lengths), median=int(statistics.median(r.lengths)),
                 max=max(r.lengths), cut=r.n_truncated, limit=limit)]
    if r.problems:
        rows = (f"| {md(engine(p))} | {n} | "
                f"{', '.join(map(str, r.examples_of_problems.get(p, [])))} |"
                for p, n in r.problems.items())
        lines.append(say("data.problems") + "\n".join(rows))
    else:
        lines.append(say("data.problems.none"))
    return {t.histogram: fig, t.stats: "\n\n".join(lines)}


# ---------------------------------------------------------------------------- wiring
def wire(t: DataTab, form: ConfigForm, service: Service):
    """Wire the tab; returns follow(event), which redraws the data view after an event that
    rewrote the form (a preset, a YAML file, a past run's config), and the events that show a
    newly loaded dataset."""
    mapping_state = form.widgets["column_mapping"]
    fmt_widget = form.widgets["dataset_format"]
    inputs = form.inputs + [t.page, t.example_row]
    outputs = display_outputs(t)

    def refresh(*values, progress=gr.Progress()):
        """The displays for the form's dataset; a failure clears the previous file's rows and
        status, saying why, so nothing on the tab belongs to another file."""
        try:
            return describe(t, form, service, values[:-2], values[-2], values[-1], progress)
        except Exception as e:   # noqa: BLE001 - said in the status line, never a dead tab
            return cleared(t, shout(error_text(e).strip() or type(e).__name__))

    def fresh(path: str):
        """A new dataset: detection starts over (mappings and forced format reset)."""
        return path, {}, "auto", 1, 0, {}

    @guard
    def upload(file):
        """Keep the file under the runs folder and empty the drop zone for the next one."""
        if not file:
            return [gr.skip()] * 7
        return (*fresh(service.data.keep_upload(file)), None)

    role_state = form.widgets["role_mapping"]
    reset = [t.path, mapping_state, fmt_widget, t.page, t.example_row, role_state]
    loaded = [  # a new dataset is shown (the model tab's Auto preset follows these)
        t.file.upload(upload, t.file, reset + [t.file], api_name="upload_data").then(
            refresh, inputs, outputs, api_name=False),
        gr.on([t.load.click, t.path.submit], lambda p: fresh((p or "").strip()), t.path, reset,
              api_name="load_data").then(refresh, inputs, outputs, api_name="describe_data")]
    for button, p in zip(t.example_buttons, examples()):
        loaded.append(button.click(lambda p=str(p): fresh(p), None, reset, api_name=False).then(
            refresh, inputs, outputs, api_name=False))
    analyses = list(loaded)      # every event that analyses: what Cancel ends

    def remap(*values):
        return {role: v for role, v in zip(roles(), values) if v}

    analyses.append(gr.on([d.input for d in t.mapping], remap, t.mapping, mapping_state,
                          api_name=False).then(refresh, inputs, outputs, api_name=False))
    analyses.append(fmt_widget.input(lambda: {}, None, mapping_state, api_name=False).then(
        refresh, inputs, outputs, api_name=False))

    def retag(table):
        """The role table as edited: tag -> role (an unknown role is refused by the engine)."""
        rows = table.values.tolist() if hasattr(table, "values") else (table or [])
        return {str(tag): str(role) for tag, role in rows if str(tag).strip()}

    analyses.append(t.role_tags.input(retag, t.role_tags, role_state, api_name=False).then(
        refresh, inputs, outputs, api_name=False))
    # Any other setting the preview depends on (template, thinking, lengths, split, model).
    changes = [form.widgets[n].change for n in DATA_FIELDS
               if n not in ("data_path", "dataset_format")
               and not isinstance(form.widgets[n], gr.State)]
    analyses.append(gr.on(changes + [t.example_row.submit, t.example_row.input], refresh,
                          inputs, outputs, trigger_mode="always_last", api_name=False,
                          show_progress="minimal"))

    def cancel():
        """End the analysis in the engine too (it stops at its next row), not only the wait."""
        service.data.cancel()
        return cleared(t, note(say("data.cancelled"), "warn"))

    t.cancel.click(cancel, None, outputs, cancels=analyses, api_name="cancel_analysis")

    @guard
    def turn(path, page, step):
        if not path:
            return gr.skip(), gr.skip()
        try:
            ds = service.data.dataset(path)
        except Exception:   # noqa: BLE001 - the status line already says why
            return gr.skip(), gr.skip()
        pages = max(1, -(-len(ds) // PAGE))
        page = min(max(1, int(page or 1) + step), pages)
        return preview(service, path, page), page

    t.prev.click(lambda p, n: turn(p, n, -1), [t.path, t.page], [t.table, t.page], api_name=False)
    t.next.click(lambda p, n: turn(p, n, +1), [t.path, t.page], [t.table, t.page],
                 api_name="next_page")
    t.page.submit(lambda p, n: turn(p, n, 0), [t.path, t.page], [t.table, t.page], api_name=False)

    def follow(event):
        followed = event.then(refresh, inputs, outputs, api_name=False)
        t.cancel.click(None, None, None, cancels=[followed], api_name=False)   # Cancel ends it too
        return followed

    return follow, loaded
