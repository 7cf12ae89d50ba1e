"""Real servers for the tests: the studio's commands started from the checkout as a user starts
them, offline, waited for until their port answers, and stopped. Every test that needs a page or
an API server starts it here."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str                 # where it answers: the page's root, or an API's base URL
    log: Path
    runs_dir: Optional[Path] = None

    def ready(self, path: str = "", timeout: float = 120) -> "Server":
        """The server, once url + path answers HTTP (any status: a 401 or a 503 is a server
        that is up); its log's tail where it exits or stays silent."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + path, timeout=2)
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"no answer within {timeout:.0f} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """End the server (not its training jobs: they run on, as after a real restart)."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def launch(args: list[str], url: str, log: Path, env: Optional[dict] = None,
           runs_dir: Optional[Path] = None) -> Server:
    """`python ARGS` from the checkout, offline, its output in `log`; not waited for (call
    .ready(), or start it first and wait once the test's other work is done)."""
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                 "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
    return Server(proc, url, log, runs_dir)


def start_page(runs_dir: Path, *flags: str, port: Optional[int] = None,
         env: Optional[dict] = None) -> Server:
    """`python launch.py --port P --runs-dir DIR` with an empty Hub cache (so the bundled demo
    model is the default), answering. The test's files (tiny model, data) lie in pytest's
    temporary folders: allowed, as an operator allows a folder of theirs."""
    port = port or free_port()
    empty_hub = runs_dir.parent / "empty-hub-cache"
    empty_hub.mkdir(parents=True, exist_ok=True)
    return launch(["launch.py", "--port", str(port), "--runs-dir", str(runs_dir),
                   "--allow-dir", str(runs_dir.parent.parent), *flags],
                  f"http://127.0.0.1:{port}/", runs_dir.parent / f"server-{port}.log",
                  {"HF_HUB_CACHE": str(empty_hub), **(env or {})}, runs_dir).ready(timeout=60)


def stop_jobs(runs_dir: Path) -> None:
    """Stop every training job left under runs_dir (tests must not leave processes behind)."""
    from studio.service.actions import Service

    service = Service(runs_dir)
    for run in service.runs():
        if run.status.active:
            service.attach(run.run_dir).stop(timeout=10)
