"""Where a training step's time goes on the GPU machine: a listener on the studio's event stream
that profiles two steps (bench/gpu_bench.py's profile=on and profile=py), and reports host time,
GPU kernel time, and where the GPU sat idle waiting for the host."""
from __future__ import annotations

from pathlib import Path


class Profiler:
    """Profiles two steps from `start` on (a listener on the studio's event stream): torch's
    profiler (host and GPU time by op), or with `python` cProfile (where the host's Python goes,
    ops or not)."""

    def __init__(self, start, path, python=False):
        self.start, self.path, self.python, self.prof = start, path, python, None

    def __call__(self, event):
        import torch

        if event.kind != "train":
            return
        if event.step == self.start:
            if self.python:
                import cProfile

                self.prof = cProfile.Profile()
                self.prof.enable()
                return
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                           torch.profiler.ProfilerActivity.CUDA])
            self.prof.__enter__()
        elif self.prof is not None and event.step == self.start + 2:
            if torch.cuda.is_available():       # the CPU runs this plumbing on tiny models
                torch.cuda.synchronize()
            if self.python:
                self.prof.disable()
                Path(self.path).write_text(_python_profile(self.prof))
                self.prof = None
                return
            self.prof.__exit__(None, None, None)
            averages = self.prof.key_averages()
            cpu = sum(e.self_cpu_time_total for e in averages) / 1e3
            gpu = sum(e.self_device_time_total for e in averages
                      if e.device_type == torch.autograd.DeviceType.CUDA) / 1e3   # kernels
            Path(self.path).write_text(
                f"two steps: {cpu:.0f} ms of host time in ops, {gpu:.0f} ms of GPU kernels\n"
                + _gpu_idle(self.prof.events()) + "\n\n"
                + averages.table(sort_by="cuda_time_total", row_limit=40) + "\n\nby host time\n"
                + averages.table(sort_by="self_cpu_time_total", row_limit=40))
            self.prof = None


def _gpu_idle(events) -> str:
    """Where the GPU waited: busy share between the first and the last kernel, the host's waits
    on the GPU (synchronising calls), and the longest gaps between kernels with the host ops
    running meanwhile (what kept the next kernel from being queued)."""
    import torch

    kernels = sorted((e.time_range.start, e.time_range.end) for e in events
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    if not kernels:
        return "no GPU kernels"
    busy, gaps, (start, end) = 0.0, [], kernels[0]
    for k_start, k_end in kernels[1:]:
        if k_start > end:
            busy += end - start
            gaps.append((k_start - end, end, k_start))
            start = k_start
        end = max(end, k_end)
    busy += end - start
    span = end - kernels[0][0]
    host = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    waits = [e for e in host if "Synchronize" in e.name or e.name == "cudaMemcpyAsync"]
    lines = [f"GPU busy {busy / 1e3:.0f} of {span / 1e3:.0f} ms ({busy / span:.0%}); "
             f"{len(gaps)} gaps, {sum(g for g, *_ in gaps) / 1e3:.0f} ms idle, "
             f"{sum(g for g, *_ in gaps if g >= 100) / 1e3:.0f} ms of it in gaps of 100 us or more",
             f"host waits on the GPU: {len(waits)} calls, "
             f"{sum(e.cpu_time_total for e in waits) / 1e3:.1f} ms "
             f"({', '.join(sorted({e.name for e in waits})) or 'none'})",
             "longest gaps (us, what the host ran meanwhile, outermost first):"]
    for gap, g_start, g_end in sorted(gaps, reverse=True)[:12]:
        during = [e for e in host if e.time_range.start < g_end and e.time_range.end > g_start
                  and not e.name.startswith("cuda")]
        names = [e.name for e in sorted(during, key=lambda e: e.time_range.start)
                 if e.cpu_parent is None or e.cpu_parent not in during][:4]
        lines.append(f"  {gap:8.0f}  {' | '.join(n[:60] for n in names) or '-'}")
    return "\n".join(lines)


def _python_profile(prof) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(50)
    stats.sort_stats("cumulative").print_stats(60)
    return out.getvalue()
