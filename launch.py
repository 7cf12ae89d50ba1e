"""Start Qwen3 Studio in the browser.

    python launch.py [--host 127.0.0.1] [--port 7860] [--share] [--auth USER:PASS] [--runs-dir DIR]

It listens on this machine only (127.0.0.1) unless --host says otherwise; --share also makes a
public gradio.live link, so use it with --auth.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python launch.py", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface; default: this machine)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    p.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")
    p.add_argument("--runs-dir", default="runs", help="folder that holds every run (default: runs)")
    args = p.parse_args(argv)
    if args.auth and ":" not in args.auth:
        p.error("--auth wants USER:PASS, e.g. --auth alice:s3cret")
    return args


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


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from studio.ui.app import CSS, THEME, build_app

    demo = build_app(args.runs_dir)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    threading.Thread(target=warm_up, daemon=True, name="warm-up").start()
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=auth,
            theme=THEME, css=CSS, show_error=True, ssr_mode=False, footer_links=["api"],
            mcp_server=False)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e}): pass another --port",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
