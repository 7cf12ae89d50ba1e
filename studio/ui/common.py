"""Small pieces every tab uses: status messages in the page, run pickers, the look of the charts."""
from __future__ import annotations

import html

import gradio as gr
from gradio.i18n import I18nData

from studio.markdown import code  # noqa: F401 - the tabs' code spans
from studio.ui.i18n import error_text, say, state_word

# kind -> (css class, catalog key of its leading words); the classes are styled in app.CSS
KINDS = {"ok": ("msg-ok", None), "info": ("msg-info", None), "warn": ("msg-warn", "msg.lead.warn"),
         "error": ("msg-error", "msg.lead.error")}


def note(text, kind: str = "info") -> str:
    """A boxed message for a status gr.HTML: errors name the problem and the fix. `text` is a
    message in the request's language, or a catalog text T(key) that the browser translates
    (for a box's first value, drawn before any request)."""
    if not text:
        return ""
    css, lead = KINDS[kind]
    body = str(text) if isinstance(text, I18nData) else \
        "<br>".join(html.escape(line) for line in text.strip().splitlines())
    return f'<div class="msg {css}"><b>{say(lead) if lead else ""}</b>{body}</div>'


def md(text) -> str:
    """`text` shown literally in Markdown: its HTML escaped and Markdown's own marks
    backslashed, so a name or a cell can neither run a script nor restyle the page."""
    import re

    return html.escape(re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", str(text)), quote=False)


def unmd(text: str) -> str:
    """md()'s text back as it was (a chat turn shown escaped, sent to the model as typed)."""
    import re

    return re.sub(r"\\([\\`*_{}\[\]()#+!|~])", r"\1", html.unescape(text))


def shout(text: str, kind: str = "error") -> str:
    """note(), plus a toast so the message is seen wherever the person is looking."""
    toast(text, "info" if kind not in ("error", "warn") else "warn")
    return note(text, kind)


def toast(text: str, kind: str = "info") -> None:
    """A notice in the page's corner, its first line. Gradio renders a notice's message as
    HTML, so the text (a run's folder name, a path, an error) is escaped first: a run named
    <img src=x onerror=...> once ran as markup there."""
    notice = gr.Warning if kind == "warn" else gr.Info
    notice(as_text(str(text).splitlines()[0][:300] if str(text) else ""),
           title=say("toast.warn" if kind == "warn" else "toast.info"))


def failure(text: str) -> gr.Error:
    """A gr.Error to raise: an error notice, its message escaped as toast()'s is."""
    return gr.Error(as_text(str(text)), title=say("toast.error"))


def as_text(text: str) -> str:
    """`text` that HTML shows as it is: & and < escaped, which is all markup needs to start;
    the rest (an arrow's ->, quotes) stays as API clients read the same message."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def first_line(e: BaseException) -> str:
    text = error_text(e).strip() or type(e).__name__
    return text.splitlines()[0]


def run_choices(service) -> list[tuple[str, str]]:
    """(label, run folder) of every run, newest first, for a run picker."""
    return [(say("run.choice", name=run.name, state=state_word(run.status.state)),
             str(run.run_dir)) for run in service.runs()]


def chart_layout(fig, height: int = 300, **kwargs):
    """One look for every plotly chart: white, compact, legend on top."""
    fig.update_layout(template="plotly_white", height=height,
                      margin=dict(l=50, r=50, t=40, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      font=dict(family="system-ui, sans-serif", size=12), **kwargs)
    return fig


def empty_chart(message: str, height: int = 300):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font=dict(size=14, color="#6b7280"),
                       xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return chart_layout(fig, height)


def guard(fn):
    """Any unexpected failure in a handler becomes a message in the page, in words (a gr.Error
    toast naming what failed), never a bare "Error" badge; the server keeps serving."""
    import functools
    import inspect

    def explain(e: Exception) -> gr.Error:
        said = error_text(e).strip()
        text = said.splitlines()[0] if said else type(e).__name__
        return failure(f"{type(e).__name__}: {text}" if type(e).__module__ == "builtins"
                       and not isinstance(e, (ValueError, OSError)) else text)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:   # noqa: BLE001
                raise explain(e) from e
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:   # noqa: BLE001
            raise explain(e) from e
    return call
