"""One run over several processes: several GPUs of a machine, or several machines, launched by
torchrun (backends.torch.distributed is what each process does inside).

The job the service starts (`python -m studio run-job RUN_DIR`) becomes a supervisor: it starts
torchrun, which starts one worker per GPU, each running the same `run-job` as a rank. Rank 0
alone writes the run folder (status, metrics.jsonl, plan, samples, the adapter), so the page,
the CLI progress bar and the metrics file read a multi-GPU run as they read any other. A stop
is agreed by all ranks at the same step; a rank that fails makes torchrun end the others, and
the supervisor writes that rank's error as the run's reason.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from studio.runs.store import files, read_config, read_status, write_status


def spread(run_dir: Path):
    """The run's resolved config when it trains over several processes, else None (a config
    that cannot be read is left for the training itself to report)."""
    try:
        config = read_config(run_dir).resolve()
    except Exception:   # noqa: BLE001 - execute says what is wrong with it, in the run's status
        return None
    return config if config.world_size > 1 else None


def launch_command(run_dir: Path, config, resume: bool) -> list[str]:
    """torchrun with the config's processes and rendezvous, running this run's job a rank each."""
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nproc-per-node={config.num_gpus or 1}", f"--nnodes={config.nnodes}",
           f"--node-rank={config.node_rank}", f"--master-addr={config.master_addr}",
           f"--master-port={config.master_port}", "--max-restarts=0",
           "-m", "studio", "run-job", str(run_dir)]
    return cmd + (["--resume"] if resume else [])


def supervise(run_dir: Path, config, resume: bool) -> int:
    """Run the job as torchrun's workers and wait. When torchrun fails, the run fails with the
    failing rank's error: rank 0's own reason stands when rank 0 failed first, another rank's
    replaces the symptom rank 0 saw (a peer that closed). Returns torchrun's code."""
    log = files(run_dir).log
    start = log.stat().st_size if log.exists() else 0
    code = subprocess.call(launch_command(Path(run_dir).resolve(), config, resume),
                           stdin=subprocess.DEVNULL)
    if code != 0:
        text = log.read_bytes()[start:].decode(errors="replace") if log.exists() else ""
        failed_rank, reason = failure_reason(text, code)
        status = read_status(run_dir)
        if failed_rank != 0 or status.active or status.state == "interrupted":
            write_status(run_dir, state="failed", ended=time.time(), reason=reason)
    return code


def failure_reason(log_text: str, code: int) -> tuple[int | None, str]:
    """(the rank that failed first, why), from torchrun's report and the workers' output."""
    cause = log_text.split("Root Cause", 1)[-1]
    rank = re.search(r"rank\s*:\s*(\d+)", cause)
    exit_code = re.search(r"exitcode\s*:\s*(-?\d+)", cause)
    errors = [line.strip() for line in log_text.splitlines()
              if re.match(r"\s*[\w.]*(Error|Exception|Interrupt)\b.*:", line)
              and "ChildFailedError" not in line and "closed by peer" not in line]
    who = f"rank {rank.group(1)}" if rank else "a training process"
    if exit_code and int(exit_code.group(1)) < 0:
        what = f"it was killed (signal {-int(exit_code.group(1))})"
    else:
        what = errors[-1][:400] if errors else f"it exited with code {code}"
    return (int(rank.group(1)) if rank else None,
            f"{who} failed: {what}; the other ranks were stopped (log.txt has the rest)")
