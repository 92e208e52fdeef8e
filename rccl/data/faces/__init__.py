"""Face finding: detectors chosen by name (detection), one person per video (track), crops (crop)."""
from rccl.data.faces.crop import FaceCropper, fill_missing_boxes
from rccl.data.faces.detection import (DEFAULT_DETECTOR, DETECTOR_NAMES, Box, Detection, DetectorError,
                                       FaceDetector, get_detector)
from rccl.data.faces.track import find_subject, iou, pick_subject, track_subject

__all__ = ["Box", "DEFAULT_DETECTOR", "DETECTOR_NAMES", "Detection", "DetectorError", "FaceCropper", "FaceDetector",
           "fill_missing_boxes", "find_subject", "get_detector", "iou", "pick_subject", "track_subject"]
