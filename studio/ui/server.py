"""Serving the page: `python -m studio ui`, the `qwen3-studio ui` script, and launch.py in a
checkout all come here, with the same flags.

It listens on this machine only (127.0.0.1) unless --host says otherwise; --share also makes a
public gradio.live link. Either needs a login (--auth-file, QWEN3_STUDIO_AUTH or --auth) unless
--insecure-no-auth says otherwise, and then the console and a banner on the page warn. The page
reads and writes only inside its runs folder, the assets, the model caches and --allow-dir
folders (studio.service.access.Confinement). gradio is imported only when serving, so the
command line's --help stays fast. The page's app also carries the OpenAI-compatible /v1 of
studio/serve/v1.py, off until the Chat tab's toggle serves a run.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading

from studio.service.access import (add_bounds_flags, add_login_flags, bounds_of, exposure,
                           hide_password_from_ps, logins)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface, needs a login; "
                             "default: this machine)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also serve a public gradio.live link (needs a login)")
    add_login_flags(parser)
    parser.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                        help="a folder the page may read datasets, models and evaluation files "
                             "from, beside the runs folder, the assets and the model caches "
                             "(repeat for several)")
    parser.add_argument("--allow-judge", action="append", default=[], metavar="HOST",
                        help="a host the Evaluate tab's judge endpoint may be on, beside this "
                             "machine, e.g. api.openai.com (repeat for several)")
    parser.add_argument("--runs-dir", "--runs_dir", default="runs",
                        help="folder that holds every run (default: runs)")
    parser.add_argument("--max-file-size", "--max_file_size", type=file_size, default="1gb",
                        metavar="SIZE", help="largest upload, e.g. 500mb or 2gb (default: 1gb)")
    add_bounds_flags(parser)


def file_size(text: str) -> int:
    """Bytes from 500mb, 2gb, 1.5g or 1048576."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write e.g. 500mb or 2gb")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def gate(args: argparse.Namespace):
    """(logins, warning) for serving as `args` asks, or (None, refusal) with exit code 2 due:
    the exposure rule of studio.service.access. Also blanks an --auth password out of `ps`."""
    try:
        who = logins(args)
    except ValueError as e:
        return None, None, str(e)
    if getattr(args, "auth", None):
        hide_password_from_ps()
    refusal, warning = exposure(args.host, who is not None, getattr(args, "share", False),
                                getattr(args, "insecure_no_auth", False))
    return who, warning, refusal


def warm_up() -> None:
    """Import the heavy libraries in the background once the page is served, so the first
    dataset's load does not wait for them."""
    try:
        import studio.data  # noqa: F401
        import transformers  # noqa: F401
        from studio.plan.hardware import detect_hardware

        detect_hardware()
    except Exception:   # noqa: BLE001 - only a warm-up; the real call reports errors
        pass


def serve(args: argparse.Namespace) -> int:
    """Build the page over the runs folder and serve it until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    who, warning, refusal = gate(args)      # before gradio loads: a refusal comes at once
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    from starlette.middleware import Middleware

    from studio.service.access import Gatekeeper
    from studio.serve.v1 import page_routes
    from studio.ui.app import CSS, THEME, build_app
    from studio.ui.i18n import script, translations

    demo = build_app(args.runs_dir, allow=args.allow_dir, warning=warning)
    demo.service.data.max_upload_bytes = args.max_file_size     # kept uploads obey it too
    demo.service.paths.judge_hosts = {host.lower() for host in args.allow_judge}
    demo.service.bounds = bounds_of(args)
    # the OpenAI-compatible /v1 (the Chat tab's toggle) on the page's own app: same port,
    # --share tunnel and logins; listed first, so Gradio's routes never shadow it
    api = page_routes(demo.service, who, args.host, args.share, args.insecure_no_auth)
    threading.Thread(target=warm_up, daemon=True, name="warm-up").start()
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=who.attempt if who else None,
            theme=THEME, css=CSS, show_error=True, ssr_mode=False, mcp_server=False,
            i18n=translations(), head=script(), footer_links=["api"],
            app_kwargs={"routes": api, "middleware": [Middleware(
                Gatekeeper, any_host=who is not None or args.insecure_no_auth)]},
            max_file_size=args.max_file_size)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e}): pass another --port",
              file=sys.stderr)
        return 2
    return 0
