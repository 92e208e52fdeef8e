"""Which reader reads which dataset name: read_layout(dataset, root) and DATASETS, the names rccl-prep takes."""
from __future__ import annotations

import os

from rccl.data.layouts.celebdf import read_celebdf
from rccl.data.layouts.common import QUALITIES, Layout, LayoutError
from rccl.data.layouts.dfd import read_dfd
from rccl.data.layouts.dfdc import read_dfdc
from rccl.data.layouts.ffpp import read_ffpp
from rccl.data.layouts.folder import read_folder

DATASETS = ("celebdf", "celebdf1", "ffpp", "dfd", "dfdc", "folder", "synthetic")


def read_layout(dataset: str, root: str | os.PathLike, **kw) -> Layout:
    """The records of a dataset tree; dataset is one of DATASETS ("synthetic": a Celeb-DF-v2 tree)."""
    if dataset in ("celebdf", "celebdf1", "synthetic"):
        return read_celebdf(root, dataset=dataset)
    if dataset == "ffpp":
        return read_ffpp(root, **kw)
    if dataset == "dfd":
        return read_dfd(root, qualities=kw.get("qualities", QUALITIES))
    if dataset == "dfdc":
        return read_dfdc(root)
    if dataset == "folder":
        return read_folder(root)
    raise LayoutError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
