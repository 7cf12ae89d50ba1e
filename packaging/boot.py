"""Make `import studio` and `import backends` load qwen3-studio, even where unsloth installed a `studio` too.

Installed as site-packages/_qwen3_studio/__init__.py, beside our studio/, backends/ and assets/:
unsloth's wheel owns site-packages/studio, so ours live in this private folder, and
qwen3_studio.pth imports this module at every interpreter start. It only puts a finder first on
sys.meta_path (no file system work here); the lookups happen at the first import of either name.
(A file directly in the folder is also what lets `pip uninstall` remove the folder itself: pip
leaves behind folders that hold only folders.) See packaging/README.md in qwen3-studio's sources.
"""
import os
import sys

# packaging/hatch_build.py replaces this line with the checkout's path in editable installs.
ROOT = None
if ROOT is None:
    ROOT = os.path.dirname(os.path.abspath(__file__))

NAMES = frozenset(("studio", "backends"))


class Qwen3StudioFinder:
    """Find this project's top-level packages before sys.path is searched; pass every other name on.

    The package we shadow stays reachable below ours: its directories are appended to our
    __path__, so a submodule we don't define (unsloth's CLI imports studio.backend.*) still loads
    from it, while every name we do define is ours.
    """

    @staticmethod
    def find_spec(name, path=None, target=None):
        # Called for every import in the process, so the common case is one set lookup.
        if name not in NAMES:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, [ROOT])
        if spec is None or not spec.submodule_search_locations:
            return None  # our files are gone (a deleted checkout): let the normal search decide
        spec.submodule_search_locations.extend(_shadowed(name, spec.submodule_search_locations))
        return spec


def _shadowed(name, ours):
    """The directories of the package Python would have imported as `name` without this finder."""
    from importlib.machinery import PathFinder

    mine = {os.path.realpath(p) for p in ours}
    for entry in sys.path:
        spec = PathFinder.find_spec(name, [entry])
        # Regular packages only, as Python prefers them to namespace portions (origin None).
        if spec is None or spec.origin is None or not spec.submodule_search_locations:
            continue
        other = [p for p in spec.submodule_search_locations if os.path.realpath(p) not in mine]
        if other:
            return other
    return []


# Once per interpreter even if imported under two names (the .pth and a test, say).
if not any(getattr(f, "__name__", "") == Qwen3StudioFinder.__name__ for f in sys.meta_path):
    sys.meta_path.insert(0, Qwen3StudioFinder)
