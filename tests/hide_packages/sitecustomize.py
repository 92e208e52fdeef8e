"""Makes the optional packages the GPU machine lacks unimportable, so that a machine that has them can
check what happens without them (bench/gpu_check.sh --dry-run, tests/test_optional_packages.py):

    PYTHONPATH=tests/hide_packages python -m pytest --collect-only -q

Python imports `sitecustomize` at start-up from the first folder on sys.path that holds one. The hidden
packages are RCCL_HIDE_PACKAGES (comma-separated top-level names or dotted prefixes), by default those
the H200 of issue 20 does not have. An import of one raises ModuleNotFoundError, as if it were absent.
"""
from __future__ import annotations

import importlib.abc
import os
import sys

DEFAULT = "av,dlib,nvidia.dali,facenet_pytorch,pytorch_metric_learning"
HIDDEN = tuple(name.strip() for name in os.environ.get("RCCL_HIDE_PACKAGES", DEFAULT).split(",") if name.strip())


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        for name in HIDDEN:
            if fullname == name or fullname.startswith(name + "."):
                raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by tests/hide_packages)",
                                          name=fullname)
        return None


sys.meta_path.insert(0, _Hide())
