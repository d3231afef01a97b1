"""Video data for JEPAs: decoders (PyAV, decord, torchcodec) behind one interface, the
official V-JEPA / V-JEPA 2 clip sampling and transforms, video datasets and a moving-sprite
demo set. The 3D models and masks live in ``jepa_core``."""

from .datasets import ClipDataset, VideoFolder, VideoIndex, read_index, write_index
from .decoders import VideoDecoder, available_backends, default_backend, open_video
from .demo_data import make_demo_videos, split_label
from .pretrained import from_pretrained, load_pretrained
from .sampling import ClipSampler, frame_step_for, sample_clip_indices
from .transforms import VideoEvalTransform, VideoTrainTransform

__version__ = "0.1.0"

__all__ = [
    "ClipDataset",
    "ClipSampler",
    "VideoDecoder",
    "VideoEvalTransform",
    "VideoFolder",
    "VideoIndex",
    "VideoTrainTransform",
    "available_backends",
    "default_backend",
    "frame_step_for",
    "from_pretrained",
    "load_pretrained",
    "make_demo_videos",
    "open_video",
    "read_index",
    "sample_clip_indices",
    "split_label",
    "write_index",
]
