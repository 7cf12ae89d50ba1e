"""The page's Service: the same service, with every path it is given checked against the folders
a served page may touch (studio.service.access.Confinement) before anything is read, loaded, written or
stopped. One place for the rule, so no tab or endpoint can forget it; the Python API and the
command line use the plain Service and keep full access.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from studio.data.readers import EXAMPLES
from studio.service.access import Confinement, Outside, hub_shaped
from studio.models.catalog import DEMO_MODEL_ID, TINY_QWEN3_ID
from studio.config import FineTuningConfig
from studio.service.actions import Refused, Service


BUNDLED = (DEMO_MODEL_ID, TINY_QWEN3_ID)     # built into the studio's cache on first use


class ConfinedService(Service):
    """A Service whose path-taking methods refuse paths outside `confine`'s folders; a refusal
    is a Refused (or a DataError for a dataset) that never says whether the path exists."""

    def __init__(self, runs_dir, allow=()):
        super().__init__(runs_dir)
        self.confine = Confinement.served(self.runs_dir, EXAMPLES, allow)
        self.judge_hosts: set[str] = set()     # --allow-judge: hosts a judge may be asked on
        self.data = ConfinedAnalyses(self.data, self)

    # ------------------------------------------------------------------ the checks
    def path(self, given) -> str:
        """`given` if it lies inside the served folders, else Refused."""
        try:
            self.confine.path(given)
        except Outside as e:
            raise Refused([str(e)]) from None
        return given

    def source(self, given: Optional[str], kind: str = "model") -> Optional[str]:
        """A model or dataset: a served path, or a Hub id (owner/name) as given."""
        if not given or not str(given).strip():
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
                "a Hub dataset whose name is also a path where the server runs is loaded from "
                "the command line only"])))
        problem = hub_model_problem(name)
        if problem:
            raise Refused([problem])
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=not online)

    def config(self, config: FineTuningConfig) -> FineTuningConfig:
        """The config with its sources checked (output_dir is not used: runs go in the runs
        folder); a model named like a path outside is replaced by its Hub copy."""
        import dataclasses

        self.source(config.data_path, "dataset")
        model = self.source(config.model_name)
        return config if model == config.model_name else \
            dataclasses.replace(config, model_name=model)

    # ------------------------------------------------------------------ the service, checked
    def check(self, config, *args, **kwargs):
        return super().check(self.config(config), *args, **kwargs)

    def plan(self, config, *args, **kwargs):
        return super().plan(self.config(config), *args, **kwargs)

    def measure_speed(self, config, *args, **kwargs):
        return super().measure_speed(self.config(config), *args, **kwargs)

    def start(self, config, run_dir=None, **kwargs):
        if run_dir is not None:
            self.path(run_dir)
        return super().start(self.config(config), run_dir, **kwargs)

    def resume(self, run_dir, config=None, **kwargs):
        return super().resume(self.path(run_dir), config and self.config(config), **kwargs)

    def stop(self, run_dir, wait: bool = False) -> None:
        return super().stop(self.path(run_dir), wait)

    def attach(self, run_dir):
        return super().attach(self.path(run_dir))

    def judge(self, url: str) -> None:
        """A judge endpoint the page may make this server call: on this machine, or on a host
        the operator named with --allow-judge (else the page could reach any address the
        server can, inside its network included)."""
        from urllib.parse import urlparse

        from studio.service.access import is_loopback

        try:
            host = urlparse(url).hostname or ""
        except ValueError:
            host = ""
        if not (is_loopback(host) or host.lower() in self.judge_hosts):
            raise Refused([f"the judge at {url[:120]!r} is not on this machine: the operator "
                           "can allow its host with --allow-judge HOST"])

    def evaluate(self, run_dir, data=None, **options):
        if options.get("judge") is not None:
            self.judge(options["judge"].base_url)
        return super().evaluate(self.path(run_dir), self.source(data, "dataset"), **options)

    def export(self, run_dir, fmt, out=None, *args, **kwargs):
        if out is not None:
            self.path(out)
        return super().export(self.path(run_dir), fmt, out, *args, **kwargs)

    def export_evalscope(self, run_dir, data=None):
        return super().export_evalscope(self.path(run_dir), self.source(data, "dataset"))

    def chat_source(self, source):
        return super().chat_source(self.source(source))

    def export_estimate(self, run_dir, *args, **kwargs):
        return super().export_estimate(self.path(run_dir), *args, **kwargs)

    def model(self, source, base_of_run: bool = False):
        return super().model(self.source(source), base_of_run)


class ConfinedAnalyses:
    """The service's Analyses with the dataset and tokenizer paths checked first."""

    def __init__(self, analyses, service: ConfinedService):
        self._analyses, self._service = analyses, service

    def __getattr__(self, name):
        return getattr(self._analyses, name)

    def __setattr__(self, name, value):      # settings (max_upload_bytes) go to the Analyses
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._analyses, name, value)

    def _data(self, path):
        from studio.data import DataError

        try:
            return self._service.source(path, "dataset")
        except Refused as e:
            raise DataError(str(e)) from None

    def dataset(self, path):
        return self._analyses.dataset(self._data(path))

    def tokenizer(self, model_name):
        return self._analyses.tokenizer(self._service.source(model_name))

    def analyse(self, config):
        self._data(config.data_path)
        return self._analyses.analyse(self._service.config(config))
