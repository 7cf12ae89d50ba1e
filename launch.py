"""Start Qwen3 Studio in the browser from a checkout (an installed wheel: `python -m studio ui`).

    python launch.py [--host 127.0.0.1] [--port 7860] [--share] [--auth-file PATH]
                     [--insecure-no-auth] [--allow-dir DIR] [--runs-dir DIR]
"""
from __future__ import annotations

import argparse
import sys

from studio.ui.server import add_server_flags, serve


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python launch.py", description=__doc__.split("\n")[0])
    add_server_flags(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
