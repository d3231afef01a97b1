"""Use pytorchvideo's labeled video datasets (Kinetics, SSv2, Charades, ... loaders) with the
jepa-video transforms. Optional: ``pip install "jepa-video[pytorchvideo]"``.

pytorchvideo 0.1.5 (its last release, sdist only) needs two workarounds with current
torchvision, both applied here:

* ``import pytorchvideo.transforms`` fails on ``torchvision.transforms.functional_tensor``
  (renamed ``_functional_tensor`` in torchvision 0.17). :func:`import_pytorchvideo` first
  registers the private module under the old name (:func:`install_functional_tensor_shim`);
  pytorchvideo only uses its ``affine``. Aliasing the public ``functional`` instead breaks
  ``ShearX`` (different ``affine`` signature).
* Its decord decoder fails on video-only files unless ``decode_audio=False``; we always pass
  it (and turn it off on datasets built elsewhere).

``decoder="torchvision"`` does not work with torchvision >= 0.26 (no video API left); use
``"pyav"`` (default) or ``"decord"``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

__all__ = [
    "PytorchVideoClips",
    "import_pytorchvideo",
    "install_functional_tensor_shim",
    "labeled_video_dataset",
    "pytorchvideo_available",
]

log = logging.getLogger(__name__)
_OLD = "torchvision.transforms.functional_tensor"
_NEW = "torchvision.transforms._functional_tensor"


def pytorchvideo_available() -> bool:
    """Whether pytorchvideo is installed (without importing it)."""
    try:
        return importlib.util.find_spec("pytorchvideo") is not None
    except (ImportError, ValueError):
        return False


def install_functional_tensor_shim() -> bool:
    """Make ``import torchvision.transforms.functional_tensor`` work again; returns False when
    torchvision is missing. Does nothing when the module exists (torchvision < 0.17) or is
    already registered."""
    if sys.modules.get(_OLD) is not None:
        return True
    try:
        if importlib.util.find_spec(_OLD) is not None:
            return True
    except (ImportError, ValueError):
        pass
    try:
        module = importlib.import_module(_NEW)
    except ImportError:
        return False
    sys.modules[_OLD] = module
    return True


def import_pytorchvideo():
    """``import pytorchvideo`` (with ``.data``) behind the torchvision shim."""
    if not pytorchvideo_available():
        from jepa_core.extras import MissingExtraError, install_hint

        raise MissingExtraError("the pytorchvideo adapter needs pytorchvideo, which is not installed: "
                                + install_hint("pytorchvideo", "jepa-video"))
    install_functional_tensor_shim()
    pv = importlib.import_module("pytorchvideo")
    importlib.import_module("pytorchvideo.data")
    return pv


def labeled_video_dataset(
    data_path: str,
    clip_sampler: Any = 2.0,
    *,
    sampling: str = "random",
    decoder: str = "pyav",
    video_path_prefix: str = "",
    video_sampler: Any = None,
    transform: Callable | None = None,
) -> Any:
    """pytorchvideo's ``labeled_video_dataset`` with ``decode_audio=False``.

    ``clip_sampler``: a pytorchvideo ``ClipSampler``, or a clip length in seconds for
    ``make_clip_sampler(sampling, seconds)``. ``data_path``: a ``path label`` CSV or a folder
    of class sub-folders (pytorchvideo's rules). ``transform`` is pytorchvideo's (acts on the
    sample dict); use :class:`PytorchVideoClips` for the jepa-video transforms.
    """
    import_pytorchvideo()
    from pytorchvideo.data import labeled_video_dataset as _make
    from pytorchvideo.data import make_clip_sampler

    if isinstance(clip_sampler, int | float):
        clip_sampler = make_clip_sampler(sampling, float(clip_sampler))
    kw: dict[str, Any] = dict(transform=transform, video_path_prefix=video_path_prefix,
                              decode_audio=False, decoder=decoder)
    if video_sampler is not None:
        kw["video_sampler"] = video_sampler
    return _make(data_path, clip_sampler, **kw)


class PytorchVideoClips(IterableDataset):
    """Iterates a pytorchvideo labeled video dataset (or any iterable of its sample dicts:
    ``{"video": float [C, T, H, W] in 0-255, "label": int, ...}``) as ``(clip, label)``.

    ``num_frames``: take this many frames, evenly spaced over the decoded window
    (``linspace`` then truncation, as the V-JEPA sampler); pytorchvideo samples clips by time,
    so the window's frame count depends on the video's rate. ``transform``: a jepa-video
    transform on ``[T, H, W, C]`` (e.g. :class:`jepa_video.transforms.VideoTrainTransform`);
    None leaves the clip as float ``[C, T, H, W]``.
    """

    def __init__(self, dataset: Iterable[dict], transform: Callable | None = None,
                 num_frames: int | None = None, generator: torch.Generator | None = None):
        super().__init__()
        if getattr(dataset, "_decode_audio", False):
            log.info("turning off audio decoding of %s (decord fails on video-only files)", type(dataset).__name__)
            dataset._decode_audio = False  # type: ignore[attr-defined]
        self.dataset, self.transform, self.num_frames, self.generator = dataset, transform, num_frames, generator

    def convert(self, sample: dict) -> tuple[torch.Tensor, int]:
        video = torch.as_tensor(sample["video"])  # [C, T, H, W]
        if video.ndim != 4:
            raise ValueError(f"expected sample['video'] as [C, T, H, W], got {tuple(video.shape)}")
        if self.num_frames is not None:
            T = video.shape[1]
            idx = np.clip(np.linspace(0, T, self.num_frames), 0, T - 1).astype(np.int64)
            video = video[:, torch.from_numpy(idx)]
        label = int(sample.get("label", -1))
        if self.transform is None:
            return video.float(), label
        return self.transform(video.permute(1, 2, 3, 0), self.generator), label

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for sample in self.dataset:
            yield self.convert(sample)
