"""The ways in: `python -m studio ui` serves the page, bare `pytest` works in a checkout, and the
example script trains and answers through the seed API."""
from __future__ import annotations

import os
import runpy
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import QA_ROWS, write_jsonl
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_ui_command_serves_the_page(tmp_path):
    """`python -m studio ui --port P --runs-dir DIR` answers on loopback (no launch.py needed)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "studio", "ui", "--port", str(port),
                             "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline, page = time.time() + 60, None
        while page is None:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the page did not answer within 60 s"
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            except OSError:
                time.sleep(0.25)
        assert b"Qwen3 Studio" in page
        assert (tmp_path / "runs").is_dir()
    finally:
        proc.terminate()
        proc.wait(15)


def test_bare_pytest_collects_the_suite():
    """`pytest` without `python -m` finds tests.conftest (the checkout is on its path)."""
    pytest_cmd = shutil.which("pytest") or str(Path(sys.executable).parent / "pytest")
    r = subprocess.run([pytest_cmd, "--collect-only", "-q", "tests/test_architecture.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    tests = len(re.findall(r"^def test_", (ROOT / "tests" / "test_architecture.py").read_text(),
                           re.M))
    assert f"{tests} tests collected" in r.stdout


@pytest.mark.slow
def test_the_simple_finetune_example_trains_and_answers(tiny_qwen3, tmp_path, monkeypatch,
                                                       capsys):
    """examples/simple_finetune.py, pointed at the tiny Qwen3, trains, saves and generates
    (run as a script, in this process: the libraries are imported already)."""
    data = write_jsonl(tmp_path / "qa.jsonl", QA_ROWS)
    out = tmp_path / "runs" / "simple"
    monkeypatch.setattr(sys, "argv", ["simple_finetune.py", "--model", tiny_qwen3, "--data",
                                      str(data), "--output-dir", str(out), "--max-steps", "2",
                                      "--prompt", "Hi"])
    runpy.run_path(str(ROOT / "examples" / "simple_finetune.py"), run_name="__main__")
    assert f"adapter saved in {out / 'adapter'}" in capsys.readouterr().out
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_importing_the_studio_gives_torch_growing_allocator_segments():
    """`import studio` asks torch's allocator for expandable segments before anything starts CUDA
    (micro-batches change length every step; fixed segments fragmented until out of memory on
    the H200), and a user's own setting stands."""
    probe = "import studio, torch; print(torch._C._accelerator_getAllocatorSettings())"
    unset = {k: v for k, v in os.environ.items()
             if k not in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")}
    for env, expected in ((unset, "expandable_segments:True"),
                          ({**unset, "PYTORCH_ALLOC_CONF": "max_split_size_mb:256"},
                           "max_split_size_mb:256")):
        r = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == expected
