"""Hatchling build hook: lay the wheel out so unsloth's own `studio` package cannot collide with ours.

Both wheels would otherwise write site-packages/studio, so the second install overwrites the
first and uninstalling either deletes the other's files. Our packages go to a private folder
instead, and a .pth imports a tiny boot module (the folder's __init__.py) whose finder maps
`studio` and `backends` there. Editable installs get the same .pth and boot module, pointed at
the checkout. See README.md here.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PRIVATE = "_qwen3_studio"  # site-packages folder that holds studio/, backends/ and assets/
BOOT = "boot.py"  # installed as PRIVATE/__init__.py, which the .pth imports
PTH = "qwen3_studio.pth"
PACKAGES = ("studio", "backends")
DATA = ("assets",)  # example datasets; code finds them at Path(studio.__file__).parent.parent / "assets"
HERE = Path(__file__).resolve().parent


class CustomBuildHook(BuildHookInterface):
    """Adds our files to the wheel through force_include; file selection is bypassed in pyproject."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root).resolve()
        files = build_data["force_include"]
        self._tmp = tempfile.mkdtemp(prefix="qwen3-studio-build-")
        pth = Path(self._tmp, PTH)      # written here: the one line Python runs at start-up
        pth.write_text(f"import {PRIVATE}\n", encoding="utf-8")
        files[str(pth)] = PTH
        if version == "editable":
            # The checkout itself is the code, so the wheel holds only the .pth and a boot module
            # that points at it; assets/ sits beside studio/ there already.
            boot = Path(self._tmp, BOOT)
            boot.write_text(editable_boot(root), encoding="utf-8")
            files[str(boot)] = f"{PRIVATE}/__init__.py"
            return
        files[str(HERE / BOOT)] = f"{PRIVATE}/__init__.py"
        # Whole folders, so non-Python files the code reads at run time (css, templates) ship too.
        for name in PACKAGES:
            files[str(root / name)] = f"{PRIVATE}/{name}"
        for name in DATA:
            # git keeps no empty folders, so a fresh clone or an sdist may lack one.
            if (root / name).is_dir():
                files[str(root / name)] = f"{PRIVATE}/{name}"

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def editable_boot(root: Path) -> str:
    """The boot module with ROOT fixed to `root`, the checkout an editable install runs from."""
    template = (HERE / BOOT).read_text(encoding="utf-8")
    line = "ROOT = None\n"
    if template.count(line) != 1:
        raise RuntimeError(f"{HERE / BOOT} must contain exactly one line {line!r} to replace")
    return template.replace(line, f"ROOT = {str(root)!r}\n")
