"""Jobs: a run trained in a thread of this process (the CLI and the Python API) or in a child
process (the page: it may go away, the job must not stall or die with it), or watched. Whether a
job may start at all is studio.service.actions's to decide.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from studio.runs.events import Event
from studio.runs.execute import execute, spawn
from studio.texts.message import Text
from studio.runs.store import (Status, ask_to_stop, files, is_job_process, may_signal,
                               read_status, record_pid, run_events, write_status,
                               written_status)

@dataclass
class Job:
    """A run being trained in a thread of this process or in a child process, or watched.

    Events are read from the run's metrics.jsonl by byte offset, so a watcher that attaches
    late (a reloaded page) still gets the whole history, and polling costs only the new lines.
    Jobs are started by studio.service.actions, which checks first whether they may start.
    """
    run_dir: Path
    thread: Optional[threading.Thread] = None
    process: Optional[subprocess.Popen] = None

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self._stop = threading.Event()

    # ---- starting
    @classmethod
    def start(cls, run_dir: Path, *, resume=False, in_process=True, listeners=(),
              data=None) -> "Job":
        """Train the prepared run folder in the background (see prepare_run_dir)."""
        from studio.runs.torchrun import spread

        job = cls(Path(run_dir))
        if in_process and spread(job.run_dir):
            in_process = False        # torchrun's workers are processes: follow their events
            threading.Thread(target=job._follow, args=(listeners,), daemon=True,
                             name=f"follow-{job.run_dir.name}").start()
        if in_process:
            # held from now, not from when the thread gets to it: another process that reads
            # the status meanwhile sees this process as the job
            held = open(files(job.run_dir).job, "a")

            def train():
                try:
                    execute(job.run_dir, job._stop.is_set, resume, listeners, data)
                finally:
                    held.close()
            job.thread = threading.Thread(target=train, name=f"train-{job.run_dir.name}",
                                          daemon=True)
            job.thread.start()
        else:
            job.process = spawn(job.run_dir, resume)
            record_pid(job.run_dir, job.process.pid)
            # reaped as soon as it ends, so a finished job never lingers as a zombie process
            threading.Thread(target=job.process.wait, daemon=True,
                             name=f"reap-{job.run_dir.name}").start()
        return job

    # ---- watching
    def _follow(self, listeners) -> None:
        """Hand a job's events to `listeners` as its metrics file grows, until it ends (a run
        trained in other processes, watched by an in-process caller such as the CLI)."""
        cursor, ended = 0, False
        while not ended:
            time.sleep(0.5)
            ended = self.process is not None and self.process.poll() is not None
            events, cursor = self.events_since(cursor)
            for event in events:
                for listener in listeners:
                    listener(event)

    @property
    def status(self) -> Status:
        if self.thread is not None and self.thread.is_alive():
            return replace(written_status(self.run_dir), state="running")
        if self.process is not None:
            self.process.poll()   # reap, so a finished child is not left a zombie
        return read_status(self.run_dir)

    @property
    def running(self) -> bool:
        return self.status.active

    def events_since(self, cursor: int = 0) -> tuple[list[Event], int]:
        """Events written after byte offset `cursor`, and the next cursor."""
        return run_events(self.run_dir, cursor)

    @property
    def events(self) -> list[Event]:
        return run_events(self.run_dir)[0]

    # ---- stopping
    def stop(self, timeout: float = 60) -> None:
        """Ask the job to stop at its next step (it saves a usable adapter). A process that does
        not stop in time is killed, which frees all of its memory; a thread of this process
        cannot be killed, so it is only asked."""
        self._stop.set()
        ask_to_stop(self.run_dir)
        if self.thread is not None:
            return
        if self.process is not None:
            pid = self.process.pid
        else:   # a job started elsewhere: only ever a process that is that job (is_job_process)
            status = written_status(self.run_dir)
            pid = status.pid if may_signal(self.run_dir, status) else None
        if not pid or pid == os.getpid():
            return
        deadline = time.time() + timeout
        while time.time() < deadline and self._process_alive(pid):
            time.sleep(0.2)
        if self._process_alive(pid):
            _kill_group(int(pid))
            if self.process is not None:
                self.process.wait(10)
            write_status(self.run_dir, state="stopped", ended=time.time(),
                         reason=Text("run.killed", seconds=round(timeout)))

    def _process_alive(self, pid) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return is_job_process(self.run_dir, written_status(self.run_dir))

    def wait(self, timeout: float | None = None) -> Status:
        if self.thread is not None:
            self.thread.join(timeout)
        elif self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.status


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
