"""Serving the page: `python -m studio ui`, the `qwen3-studio ui` script, and launch.py in a
checkout all come here, with the same flags.

It listens on this machine only (127.0.0.1) unless --host says otherwise; --share also makes a
public gradio.live link, so use it with --auth. gradio is imported only when serving, so the
command line's --help stays fast. The page's app also carries the OpenAI-compatible /v1 of
studio/serve.py, off until the Chat tab's toggle serves a run.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface; default: this "
                             "machine)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also serve a public gradio.live link")
    parser.add_argument("--auth", metavar="USER:PASS", type=_user_and_password,
                        help="ask for this user name and password")
    parser.add_argument("--runs-dir", "--runs_dir", default="runs",
                        help="folder that holds every run (default: runs)")


def _user_and_password(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise argparse.ArgumentTypeError("--auth wants USER:PASS, e.g. --auth alice:s3cret")
    return user, password


def warm_up() -> None:
    """Import the heavy libraries in the background once the page is served, so the first
    dataset loads in a second instead of ten."""
    try:
        import studio.data  # noqa: F401
        import transformers  # noqa: F401
        from studio.hardware import detect_hardware

        detect_hardware()
    except Exception:   # noqa: BLE001 - only a warm-up; the real call reports errors
        pass


def serve(args: argparse.Namespace) -> int:
    """Build the page over the runs folder and serve it until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from studio.serve import page_routes
    from studio.ui.app import CSS, THEME, build_app
    from studio.ui.i18n import SCRIPT, translations

    demo = build_app(args.runs_dir)
    # the OpenAI-compatible /v1 (the Chat tab's toggle) on the page's own app: same port,
    # --share tunnel and --auth; listed first, so Gradio's routes never shadow it
    api = page_routes(demo.service, args.auth, args.host, args.share)
    threading.Thread(target=warm_up, daemon=True, name="warm-up").start()
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=args.auth,
            theme=THEME, css=CSS, show_error=True, ssr_mode=False, mcp_server=False,
            i18n=translations(), head=SCRIPT, footer_links=["api", "settings"],
            app_kwargs={"routes": api})
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e}): pass another --port",
              file=sys.stderr)
        return 2
    return 0
