"""Where a run's events go besides metrics.jsonl: Weights & Biases, TensorBoard and trackio.

Each tracker is a listener of the run's event stream (studio.runs.events), so every backend reports
to it the same way, the scripted one included, and the trainer's own integrations stay off.
Weights & Biases runs offline (files under the run folder, `wandb sync` later) when there is no
API key or no network; TensorBoard writes to run_dir/tensorboard; trackio keeps its local
database (TRACKIO_DIR, by default ~/.cache/huggingface/trackio; `trackio show` opens it).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

# tracker -> (module to import, what to install)
INSTALL = {"wandb": ("wandb", "pip install wandb"),
           "tensorboard": ("tensorboard", "pip install tensorboard"),
           "trackio": ("trackio", "pip install trackio")}


def _scalars(event) -> dict:
    """The numbers of a train or eval event, under names every dashboard groups alike."""
    if event.kind == "train":
        keys = ("loss", "learning_rate", "grad_norm", "tokens_per_s", "peak_memory_gb", "mfu",
                "epoch", "reward_chosen", "reward_rejected", "reward_margin",
                "preference_accuracy")
        return {f"train/{k}": event.data[k] for k in keys
                if isinstance(event.data.get(k), (int, float))}
    if event.kind == "eval" and isinstance(event.data.get("eval_loss"), (int, float)):
        return {f"eval/{k.removeprefix('eval_')}": v for k, v in event.data.items()
                if k.startswith("eval_") and isinstance(v, (int, float))}
    return {}


class WandbTracker:
    def __init__(self, config, run_dir: Path):
        import wandb

        self.run = wandb.init(project=config.wandb_project,
                              name=config.wandb_run_name or Path(run_dir).name,
                              dir=str(run_dir), config=config.to_dict(), mode=wandb_mode(),
                              reinit="finish_previous")

    def __call__(self, event) -> None:
        if (values := _scalars(event)):
            self.run.log(values, step=event.step)

    def close(self) -> None:
        self.run.finish()


def wandb_mode() -> str:
    """online with an API key and a reachable server; offline otherwise (WANDB_MODE wins)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or Path("~/.netrc").expanduser().is_file()
    try:
        socket.getaddrinfo("api.wandb.ai", 443)
        reachable = True
    except OSError:
        reachable = False
    return "online" if has_key and reachable else "offline"


class TensorBoardTracker:
    def __init__(self, config, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, event) -> None:
        for name, value in _scalars(event).items():
            self.writer.add_scalar(name, value, event.step)

    def close(self) -> None:
        self.writer.close()


class TrackioTracker:
    def __init__(self, config, run_dir: Path):
        import trackio

        self.trackio = trackio
        trackio.init(project=config.wandb_project, name=config.wandb_run_name or
                     Path(run_dir).name, config=config.to_dict(), resume="allow",
                     auto_log_gpu=False, auto_log_cpu=False)

    def __call__(self, event) -> None:
        if (values := _scalars(event)):
            self.trackio.log(values, step=event.step)

    def close(self) -> None:
        self.trackio.finish()


TRACKERS = {"wandb": WandbTracker, "tensorboard": TensorBoardTracker, "trackio": TrackioTracker}


def chosen(config) -> list[str]:
    """The trackers a config asks for (use_wandb, the guide's switch, counts as wandb)."""
    return list(dict.fromkeys([*config.report_to, *(["wandb"] if config.use_wandb else [])]))


def open_trackers(config, run_dir: Path) -> list:
    return [TRACKERS[name](config, run_dir) for name in chosen(config)]
