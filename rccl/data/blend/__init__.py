"""Self-blending (Shiohara & Yamasaki, CVPR 2022): pseudo-fakes made on the fly from natural crops and their
68 landmarks, for training with naturals only (data.fakes=sbi) or beside a dataset's fakes (mixed).

params      the ranges of every draw (BlendParams)
mask        the landmarks' hull -> moved, deformed, eroded/dilated, blurred, scaled: the blending mask
jitter      the source copy's colour, frequency and zoom/shift jitters
pseudo_fake self_blend(crops, landmarks): the batch of pseudo-fakes, their masks and the naturals they pair with
records     training_set(records, mode): the records of a data.fakes mode, each pseudo-fake a record
"""
from rccl.data.blend.params import DEFAULT_PARAMS, BlendParams
from rccl.data.blend.pseudo_fake import self_blend
from rccl.data.blend.records import BLEND_KEY, FAKES_MODES, LandmarkDataError, TrainingSet, training_set, why_no_landmarks

__all__ = ["BLEND_KEY", "BlendParams", "DEFAULT_PARAMS", "FAKES_MODES", "LandmarkDataError", "TrainingSet",
           "self_blend", "training_set", "why_no_landmarks"]
