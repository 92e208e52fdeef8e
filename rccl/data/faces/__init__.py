"""Face finding: what a detector gives (base), detectors chosen by name (registry), one person per video
(track), crops (crop)."""
from rccl.data.faces.base import Box, Detection, DetectorError, FaceDetector
from rccl.data.faces.crop import FaceCropper, fill_missing_boxes
from rccl.data.faces.registry import DEFAULT_DETECTOR, DETECTOR_NAMES, get_detector
from rccl.data.faces.track import find_subject, iou, pick_subject, track_subject

__all__ = ["Box", "DEFAULT_DETECTOR", "DETECTOR_NAMES", "Detection", "DetectorError", "FaceCropper", "FaceDetector",
           "fill_missing_boxes", "find_subject", "get_detector", "iou", "pick_subject", "track_subject"]
