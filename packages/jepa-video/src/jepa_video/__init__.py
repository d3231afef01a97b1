"""Video data for JEPAs: decoders (PyAV, decord, torchcodec) behind one interface, the
official V-JEPA / V-JEPA 2 clip sampling and transforms, video datasets and a moving-sprite
demo set. The 3D models and masks live in ``jepa_core``.

The names below load lazily (``import jepa_video`` imports neither torch nor a decoder until
one is used), as in jepa-image and jepa-eval.
"""

__version__ = "0.1.0"

_LAZY = {
    "ClipDataset": "datasets", "VideoFolder": "datasets", "VideoIndex": "datasets", "read_index": "datasets",
    "write_index": "datasets",
    "VideoDecoder": "decoders", "available_backends": "decoders", "default_backend": "decoders",
    "open_video": "decoders",
    "make_demo_videos": "demo_data", "split_label": "demo_data",
    "from_pretrained": "pretrained", "load_pretrained": "pretrained",
    "ClipSampler": "sampling", "frame_step_for": "sampling", "sample_clip_indices": "sampling",
    "VideoEvalTransform": "transforms", "VideoTrainTransform": "transforms",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"jepa_video.{_LAZY[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'jepa_video' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
