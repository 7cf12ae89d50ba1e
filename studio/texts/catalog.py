"""Every engine message by key, (English, 中文), gathered from the catalog of each speaker."""
from __future__ import annotations

from studio.texts import advice, data, models, refusals, runs

LANGUAGES = ("en", "zh")


def _merge(*catalogs: dict) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for catalog in catalogs:
        twice = out.keys() & catalog.keys()
        assert not twice, f"keys in two catalogs: {sorted(twice)}"
        out.update(catalog)
    return out


CATALOG = _merge(data.MESSAGES, refusals.MESSAGES, advice.MESSAGES, runs.MESSAGES,
                 models.MESSAGES)
