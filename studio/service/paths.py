"""Which paths a Service takes: any on the command line and in Python (the person's own
machine), only those inside the folders a served page may touch for the page
(studio.service.access.Confinement). The Service asks its Paths where every path enters it,
before anything is read, loaded, written or stopped, and hands them to its Analyses for the
datasets and tokenizers they load: one place for the rule, so no tab or endpoint can forget it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from studio.config import FineTuningConfig
from studio.data.readers import EXAMPLES
from studio.models.catalog import DEMO_MODEL_ID, TINY_QWEN3_ID
from studio.service.access import Confinement, Outside, hub_shaped
from studio.service.errors import Refused
from studio.texts.message import Text, message_of

BUNDLED = (DEMO_MODEL_ID, TINY_QWEN3_ID)     # built into the studio's cache on first use


class Paths:
    """Every path (`confine` None), or only the served folders' and the judges on this machine
    or on `judge_hosts`. A refusal never says whether the path exists."""

    def __init__(self, confine: Optional[Confinement] = None):
        self.confine = confine
        self.judge_hosts: set[str] = set()     # --allow-judge: hosts a judge may be asked on

    @classmethod
    def served(cls, runs_dir: str | Path, allow: Iterable[str | Path] = ()) -> "Paths":
        """The page's: its runs folder, the example data, the model caches and --allow-dir."""
        return cls(Confinement.served(runs_dir, EXAMPLES, allow))

    def path(self, given):
        """`given` if it may be touched, else Refused."""
        if self.confine is None:
            return given
        try:
            self.confine.path(given)
        except Outside as e:
            raise Refused([message_of(e)]) from None
        return given

    def source(self, given: Optional[str], kind: str = "model") -> Optional[str]:
        """A model or dataset: a path it may touch, or a Hub id (owner/name) as given."""
        if self.confine is None or not given or not str(given).strip():
            return given
        text = str(given).strip()
        if text in BUNDLED:
            return given
        if hub_shaped(text):
            try:
                self.confine.path(text)            # a relative path inside the served folders
                return given
            except Outside:
                pass
            if Path(text).expanduser().exists():   # and a path outside them: never read it
                return self._hub_only(text, kind)
            return given
        return self.path(given)

    def dataset(self, given: Optional[str]) -> Optional[str]:
        """A dataset's path or Hub id, refused as a DataError (as every data problem is)."""
        from studio.data import DataError

        try:
            return self.source(given, "dataset")
        except Refused as e:
            raise DataError(message_of(e)) from None

    def config(self, config: FineTuningConfig) -> FineTuningConfig:
        """The config with its sources checked (output_dir is not used: runs go in the runs
        folder); a model named like a path outside is replaced by its Hub copy."""
        import dataclasses

        self.source(config.data_path, "dataset")
        model = self.source(config.model_name)
        return config if model == config.model_name else \
            dataclasses.replace(config, model_name=model)

    def judge(self, url: str) -> None:
        """A judge endpoint the page may make this server call: on this machine, or on a host
        the operator named with --allow-judge (else the page could reach any address the
        server can, inside its network included)."""
        from urllib.parse import urlparse

        from studio.service.access import is_loopback

        if self.confine is None:
            return
        try:
            host = urlparse(url).hostname or ""
        except ValueError:
            host = ""
        if not (is_loopback(host) or host.lower() in self.judge_hosts):
            raise Refused([Text("refuse.judge_host", url=url[:120])])

    def _hub_only(self, name: str, kind: str) -> str:
        """`name` is a Hub id and also a path outside the served folders (relative to where the
        server runs). The page gets the Hub's copy (downloaded into its cache, which is served)
        or the refusal a Hub id that is not there gets, so nothing tells that the path exists.
        A Hub dataset of such a name is loaded only from the CLI: said only with a network."""
        from studio.data import DataError
        from studio.data.readers import hub_dataset_problem
        from studio.models.local import hub_model_problem, hub_reachable

        online = hub_reachable()
        if kind == "dataset":
            import datasets

            raise DataError(hub_dataset_problem(name, datasets.config.HF_HUB_OFFLINE, online, Refused([
                Text("refuse.hub_dataset_cli")])))
        problem = hub_model_problem(name)
        if problem:
            raise Refused([problem])
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=not online)
