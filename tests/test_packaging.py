"""Packaging: qwen3-studio and unsloth both ship a top-level `studio`; side by side, each keeps working.

Builds our wheel once and installs it, without dependencies, next to unsloth 2026.10.9's real
wheel in fresh venvs (no system site packages), then asks from outside the checkout what
`import studio` loads. CPU only, about a minute; needs PyPI for hatchling and the unsloth wheel,
which is kept under ~/.cache/qwen3-studio so reruns skip the download. See packaging/README.md.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNSLOTH = "unsloth==2026.10.9"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwen3-studio"
PRIVATE = "_qwen3_studio"  # our folder in site-packages, beside unsloth's studio/
OURS = ("studio", "backends", "assets")  # what the standard wheel puts in PRIVATE

# What the venv checks print: where each name resolves, from a directory outside the checkout.
PROBE = """
import importlib.util, json, sys
import studio, backends
print(json.dumps({
    "studio": studio.__file__,
    "studio_path": list(studio.__path__),
    "backends": backends.__file__,
    "main": importlib.util.find_spec("studio.__main__").origin,
    "sys_path": sys.path,
}))
"""


# ---------------------------------------------------------------------------- helpers
def run(*cmd, cwd=None, check=True) -> subprocess.CompletedProcess:
    """Run a command as a user's shell would, minus anything that points Python or pip elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_USER",
                        "PIP_TARGET", "PIP_PREFIX",
                        # Imports then write __pycache__, which uninstalls must clean up too.
                        "PYTHONDONTWRITEBYTECODE"}}
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


class Venv:
    """A fresh venv without system site packages, driven only through its own python."""

    def __init__(self, path: Path):
        run(sys.executable, "-m", "venv", path)
        self.bin = path / "bin"
        self.python = self.bin / "python"
        self.site = Path(self.py("import sysconfig; print(sysconfig.get_paths()['purelib'])"))

    def install(self, *args: str | Path) -> None:
        # --no-compile: pip would byte-compile unsloth's 2,000 files on every install.
        run(self.python, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", *args)

    def uninstall(self, name: str) -> None:
        run(self.python, "-m", "pip", "uninstall", "-q", "-y", name)

    def py(self, code: str, cwd: Path | None = None) -> str:
        return run(self.python, "-c", code, cwd=cwd).stdout.strip()

    def probe(self, cwd: Path) -> dict:
        return json.loads(self.py(PROBE, cwd=cwd).splitlines()[-1])

    def leftovers(self) -> list[str]:
        """Our names still in site-packages, dist-info aside."""
        return sorted(p.name for p in self.site.iterdir()
                      if p.name.startswith(("_qwen3_studio", "qwen3_studio"))
                      and not p.name.endswith(".dist-info"))


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def children(names: list[str], package: str) -> set[str]:
    """Module and subpackage names directly inside `package/` of a wheel listing."""
    prefix = package.rstrip("/") + "/"
    return {n[len(prefix):].split("/")[0].removesuffix(".py")
            for n in names if n.startswith(prefix)} - {"__init__", "__pycache__"}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def our_wheel(tmp_path_factory) -> Path:
    """This checkout's wheel, built once for the module as `pip install .` would build it."""
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, ROOT)
    (wheel,) = out.glob("qwen3_studio-*.whl")
    return wheel


@pytest.fixture(scope="module")
def unsloth_wheel() -> Path:
    """unsloth's real wheel from PyPI, downloaded once per machine."""
    version = UNSLOTH.split("==")[1]
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "unsloth-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # two test workers: one downloads, the other waits
        found = sorted(CACHE.glob(f"unsloth-{version}-*.whl"))
        if not found:
            run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary",
                ":all:", "-d", CACHE, UNSLOTH)
            found = sorted(CACHE.glob(f"unsloth-{version}-*.whl"))
    return found[0]


@pytest.fixture(scope="module")
def both(tmp_path_factory, our_wheel, unsloth_wheel) -> Venv:
    """A venv with unsloth installed first and ours second, as `pip install qwen3-studio[cuda]` may."""
    venv = Venv(tmp_path_factory.mktemp("both") / "venv")
    venv.install(unsloth_wheel)
    venv.install(our_wheel)
    return venv


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A working directory outside the checkout, so the current directory cannot supply `studio`."""
    return tmp_path_factory.mktemp("elsewhere")


# ---------------------------------------------------------------------------- the wheel
def test_the_wheel_never_writes_site_packages_studio(our_wheel):
    """Everything sits in _qwen3_studio/ (the boot module is its __init__.py), beside one .pth."""
    names = wheel_names(our_wheel)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {PRIVATE, "qwen3_studio.pth"}
    with zipfile.ZipFile(our_wheel) as z:
        assert z.read("qwen3_studio.pth").decode() == "import _qwen3_studio\n"


def test_the_wheel_ships_every_file_the_code_may_read(our_wheel):
    """css, templates and example datasets travel with the code, not just .py files."""
    names = set(wheel_names(our_wheel))
    on_disk = {f"{PRIVATE}/{p.relative_to(ROOT).as_posix()}"
               for top in OURS if (ROOT / top).is_dir()
               for p in (ROOT / top).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert on_disk - names == set()
    assert f"{PRIVATE}/studio/__init__.py" in names


def test_no_file_or_studio_submodule_of_ours_collides_with_unsloths(our_wheel, unsloth_wheel):
    """Disjoint files keep either uninstall harmless; disjoint submodules keep unsloth's CLI importable."""
    ours, theirs = wheel_names(our_wheel), wheel_names(unsloth_wheel)
    assert set(ours) & set(theirs) == set()
    # unsloth's studio stays reachable below ours only for names we do not define.
    assert children(ours, f"{PRIVATE}/studio") & children(theirs, "studio") == set()
    assert children(ours, f"{PRIVATE}/backends") & children(theirs, "backends") == set()


@pytest.mark.slow
def test_the_sdist_builds_and_rebuilds_the_same_wheel(our_wheel, tmp_path):
    """A wheel built from the sdist, as pip does for users of PyPI's sdist, matches the direct one."""
    tools = Venv(tmp_path / "tools")
    run(tools.python, "-m", "pip", "install", "-q", "hatchling>=1.25")
    run(tools.python, "-m", "hatchling", "build", "-t", "sdist", "-d", tmp_path / "sdist", cwd=ROOT)
    (sdist,) = (tmp_path / "sdist").glob("qwen3_studio-*.tar.gz")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "wheel", sdist)
    (rebuilt,) = (tmp_path / "wheel").glob("qwen3_studio-*.whl")
    assert sorted(wheel_names(rebuilt)) == sorted(wheel_names(our_wheel))


# ---------------------------------------------------------------------------- installed beside unsloth
def test_installed_beside_unsloth_studio_and_backends_are_ours(both, elsewhere):
    """`import studio`, `import backends` and `-m studio` all find our files, not unsloth's."""
    got = both.probe(elsewhere)
    private = both.site / PRIVATE
    assert Path(got["studio"]) == private / "studio" / "__init__.py"
    assert Path(got["backends"]) == private / "backends" / "__init__.py"
    assert Path(got["main"]) == private / "studio" / "__main__.py"
    # Code finds the example datasets here (Path(studio.__file__).parent.parent / "assets").
    assert Path(got["studio"]).parent.parent == private
    if any((ROOT / "assets").rglob("*")):
        assert (private / "assets").is_dir()


def test_unsloths_cli_still_imports_its_studio_backend(both, elsewhere):
    """unsloth_cli imports studio.backend.* at start-up, so shadowing alone broke every `unsloth` command."""
    path = both.py("import studio.backend.utils.pid_records as m; print(m.__file__)", cwd=elsewhere)
    assert Path(path) == both.site / "studio" / "backend" / "utils" / "pid_records.py"


def test_python_m_studio_and_the_console_script_run_our_cli(both, elsewhere):
    """Both entry points reach our studio.cli (the venv lacks its deps, so a traceback through it counts)."""
    for cmd in ([both.python, "-m", "studio", "--help"], [both.bin / "qwen3-studio", "--help"]):
        result = run(*cmd, cwd=elsewhere, check=False)
        # unsloth's studio has neither __main__ nor cli, so success can only be ours.
        ran_ours = result.returncode == 0 or f"/{PRIVATE}/studio/" in result.stderr
        assert ran_ours, f"{cmd} did not run our CLI:\n{result.stdout}\n{result.stderr}"


def test_start_up_stays_cheap(both):
    """The .pth runs in every interpreter, so the boot module must not scan distributions."""
    timing = run(both.python, "-X", "importtime", "-c", "pass").stderr
    assert re.search(rf"\|\s+{PRIVATE}$", timing, re.M)
    assert "importlib.metadata" not in timing


@pytest.mark.slow
def test_uninstalling_either_package_leaves_the_other_working(our_wheel, unsloth_wheel, tmp_path,
                                                              elsewhere):
    """Removing unsloth keeps ours; removing ours gives `import studio` back to unsloth, leaving nothing."""
    venv = Venv(tmp_path / "venv")
    venv.install(our_wheel)
    venv.install(unsloth_wheel)

    venv.uninstall("unsloth")
    got = venv.probe(elsewhere)
    assert Path(got["studio"]) == venv.site / PRIVATE / "studio" / "__init__.py"
    assert got["studio_path"] == [str(venv.site / PRIVATE / "studio")]
    assert not (venv.site / "studio").exists()

    venv.install(unsloth_wheel)
    venv.uninstall("qwen3-studio")
    assert venv.leftovers() == []
    path = venv.py("import studio; print(studio.__file__)", cwd=elsewhere)
    assert Path(path) == venv.site / "studio" / "__init__.py"
    assert (venv.site / "studio" / "backend" / "run.py").is_file()


# ---------------------------------------------------------------------------- editable install
@pytest.mark.slow
def test_editable_install_beside_unsloth_runs_the_checkout(unsloth_wheel, tmp_path, elsewhere):
    """`pip install -e .` maps studio and backends to this checkout and adds nothing to sys.path."""
    venv = Venv(tmp_path / "venv")
    venv.install(unsloth_wheel)
    venv.install("-e", ROOT)
    got = venv.probe(elsewhere)
    assert Path(got["studio"]) == ROOT / "studio" / "__init__.py"
    assert Path(got["backends"]) == ROOT / "backends" / "__init__.py"
    assert Path(got["main"]) == ROOT / "studio" / "__main__.py"
    # Same relation as the wheel: assets/ sits beside studio/.
    assert Path(got["studio"]).parent.parent / "assets" == ROOT / "assets"
    # The checkout on sys.path would expose tests/, bench/ and packaging/ as top-level names.
    assert str(ROOT) not in got["sys_path"]
    assert got["studio_path"][1:] == [str(venv.site / "studio")]
    assert venv.leftovers() == [PRIVATE, "qwen3_studio.pth"]
    assert [p.name for p in (venv.site / PRIVATE).iterdir() if p.name != "__pycache__"] == ["__init__.py"]

    venv.uninstall("qwen3-studio")
    assert venv.leftovers() == []
    path = venv.py("import studio; print(studio.__file__)", cwd=elsewhere)
    assert Path(path) == venv.site / "studio" / "__init__.py"
