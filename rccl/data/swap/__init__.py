"""Face swaps of real photographs (FF++'s FaceSwap family: landmark warp, colour match, blend; no network):
a labelled `folder` tree of natural photos and their swaps, for benchmarking detectors on real faces.

landmarks  PhotoLandmarker: a whole photo's 68 landmarks (dlib HOG, padded retry, or the frame as the box)
warp       warp_face: the donor's face piecewise-affinely onto the target's landmarks
colour     match_colour: Reinhard colour transfer in CIELAB inside the face
compose    swap_face: warp + colour + blend (feathered hull or Poisson; an open mouth kept) -> the swap
plan       the photos (folder or list), their order, splits and donors (seeded, no pixels)
tree       make_swap_tree: the tree (real/, fake/faceswap/, splits.json, forgeries.json, the report)
See docs/face_swap.md.
"""
from rccl.data.swap.compose import BLENDS, MOUTHS, SwapResult, face_hull, swap_face
from rccl.data.swap.landmarks import BOX_MODES, PhotoFit, PhotoLandmarker
from rccl.data.swap.plan import ORDERS, SwapError, list_photos
from rccl.data.swap.tree import SwapSettings, make_swap_tree

__all__ = ["BLENDS", "BOX_MODES", "MOUTHS", "ORDERS", "PhotoFit", "PhotoLandmarker", "SwapError", "SwapResult", "SwapSettings",
           "face_hull", "list_photos", "make_swap_tree", "swap_face"]
