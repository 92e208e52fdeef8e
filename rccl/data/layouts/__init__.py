"""Dataset trees as distributed, read into one record per video: `read_layout(dataset, root)`.

One module per tree, each with its shape in its docstring: `celebdf` (Celeb-DF v2, v1 and rccl-synth's
trees), `ffpp` (FaceForensics++), `dfd` (FF++'s DeepFakeDetection), `dfdc`, `folder` (ROOT/real/** and
ROOT/fake/**); `common` holds the record, the layout and the error they share, `registry` the names.

A tree that does not have its shape raises LayoutError saying what was expected and what was found.
Single bad entries (a stray file, a misnamed video, a test list naming a missing file) do not stop the
run: they come back in Layout.problems, each with the path and the reason, and prep reports them.
"""
from rccl.data.layouts.celebdf import CELEBDF_FOLDERS, CELEBDF_TEST_LIST, read_celebdf
from rccl.data.layouts.common import (IMAGE_SUFFIXES, QUALITIES, SHIPS_QUALITIES, SPLITS, VIDEO_SUFFIXES, Layout,
                                      LayoutError, Problem, VideoRecord)
from rccl.data.layouts.dfd import DFD_FAKE, DFD_REAL, read_dfd
from rccl.data.layouts.dfdc import DFDC_METADATA, DFDC_TEST_LABELS, read_dfdc
from rccl.data.layouts.ffpp import FFPP_METHODS, FFPP_SPLITS, read_ffpp
from rccl.data.layouts.folder import FOLDER_SPLITS, read_folder
from rccl.data.layouts.registry import DATASETS, read_layout

__all__ = ["CELEBDF_FOLDERS", "CELEBDF_TEST_LIST", "DATASETS", "DFDC_METADATA", "DFDC_TEST_LABELS", "DFD_FAKE",
           "DFD_REAL", "FFPP_METHODS", "FFPP_SPLITS", "FOLDER_SPLITS", "IMAGE_SUFFIXES", "Layout", "LayoutError",
           "Problem", "QUALITIES", "SHIPS_QUALITIES", "SPLITS", "VIDEO_SUFFIXES", "VideoRecord", "read_celebdf",
           "read_dfd", "read_dfdc", "read_ffpp", "read_folder", "read_layout"]
