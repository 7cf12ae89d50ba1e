"""The page's Service: the same service, with every path it is given checked against the folders
a served page may touch (studio.access.Confinement) before anything is read, loaded, written or
stopped. One place for the rule, so no tab or endpoint can forget it; the Python API and the
command line use the plain Service and keep full access.
"""
from __future__ import annotations

from typing import Optional

from studio.access import Confinement, Outside, is_hub_id
from studio.catalog import DEMO_MODEL_ID, TINY_QWEN3_ID
from studio.config import FineTuningConfig
from studio.service import Refused, Service


BUNDLED = (DEMO_MODEL_ID, TINY_QWEN3_ID)     # built into the studio's cache on first use


class ConfinedService(Service):
    """A Service whose path-taking methods refuse paths outside `confine`'s folders; a refusal
    is a Refused (or a DataError for a dataset) that never says whether the path exists."""

    def __init__(self, runs_dir, allow=()):
        super().__init__(runs_dir)
        self.confine = Confinement.served(self.runs_dir, allow)
        self.data = ConfinedAnalyses(self.data, self)

    # ------------------------------------------------------------------ the checks
    def path(self, given) -> str:
        """`given` if it lies inside the served folders, else Refused."""
        try:
            self.confine.path(given)
        except Outside as e:
            raise Refused([str(e)]) from None
        return given

    def source(self, given: Optional[str]) -> Optional[str]:
        """A model or dataset: a Hub id (owner/name) as given, else a served path."""
        if not given or not str(given).strip():
            return given
        text = str(given).strip()
        if text in BUNDLED or is_hub_id(text):     # not a path on this machine
            return given
        return self.path(given)

    def config(self, config: FineTuningConfig) -> FineTuningConfig:
        self.source(config.data_path)      # (output_dir is not used: runs go in the runs folder)
        self.source(config.model_name)
        return config

    # ------------------------------------------------------------------ the service, checked
    def check(self, config, *args, **kwargs):
        return super().check(self.config(config), *args, **kwargs)

    def estimate(self, config, *args, **kwargs):
        return super().estimate(self.config(config), *args, **kwargs)

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

    def evaluate(self, run_dir, data=None, **options):
        return super().evaluate(self.path(run_dir), self.source(data), **options)

    def export(self, run_dir, fmt, out=None, *args, **kwargs):
        if out is not None:
            self.path(out)
        return super().export(self.path(run_dir), fmt, out, *args, **kwargs)

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
            return self._service.source(path)
        except Refused as e:
            raise DataError(str(e)) from None

    def dataset(self, path):
        return self._analyses.dataset(self._data(path))

    def tokenizer(self, model_name):
        return self._analyses.tokenizer(self._service.source(model_name))

    def analyse(self, config):
        self._data(config.data_path)
        self._service.source(config.model_name)
        return self._analyses.analyse(config)
