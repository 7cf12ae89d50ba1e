"""How long `python launch.py` takes to serve the page on this machine (issue #2 asks for 15 s
on the 2-core machine), and how much of it is importing gradio.

    python bench/startup.py [--rounds 5]

Each round starts the server as a user would, offline, with an empty runs folder, and times it
until the page answers over HTTP; then it is stopped. A second process times `import gradio`
alone, alternating with the servers so that machine noise hits both. Run it on an idle machine:
the test suite no longer asserts this time, since two workers training beside it made it vary.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.multi_gpu import free_port  # noqa: E402


def serve_once(folder: Path) -> float:
    """Seconds from starting launch.py until its page answers."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--runs-dir",
                             str(folder / "runs")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 120:
            if proc.poll() is not None:
                raise RuntimeError("the server exited before it served")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                return time.perf_counter() - start
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not serve within 120 s")
    finally:
        proc.terminate()
        proc.wait(15)


def import_gradio() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    served, imported = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            served.append(serve_once(Path(tmp) / str(i)))
            imported.append(import_gradio())
            print(f"round {i + 1}: served in {served[-1]:.1f} s; "
                  f"import gradio {imported[-1]:.1f} s", flush=True)
    print(f"served in {statistics.median(served):.1f} s (median of {args.rounds}; "
          f"{min(served):.1f}-{max(served):.1f}), of which importing gradio "
          f"{statistics.median(imported):.1f} s")


if __name__ == "__main__":
    main()
