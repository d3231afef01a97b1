"""pytorchvideo adapter: the torchvision shim, the sample conversion, and (only when
pytorchvideo is installed) a real labeled video dataset."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from jepa_video.pytorchvideo_adapter import (
    PytorchVideoClips,
    install_functional_tensor_shim,
    pytorchvideo_available,
)
from jepa_video.transforms import VideoTrainTransform

OLD = "torchvision.transforms.functional_tensor"


def test_shim_registers_the_private_module_under_the_old_name(monkeypatch):
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    monkeypatch.delitem(sys.modules, OLD, raising=False)
    assert install_functional_tensor_shim()
    mod = importlib.import_module(OLD)
    import torchvision.transforms._functional_tensor as private

    assert mod is private and callable(mod.affine)  # the affine pytorchvideo uses, not functional.affine
    assert install_functional_tensor_shim()  # idempotent


def _fake_samples(n=3, t=12):
    g = torch.Generator().manual_seed(0)
    for i in range(n):  # pytorchvideo's sample dicts: video [C, T, H, W] float in 0-255
        video = torch.randint(0, 256, (3, t, 20, 24), generator=g).float()
        video[:, :, 0, 0] = torch.arange(t).float()  # frame number in a corner
        yield {"video": video, "label": i + 5, "video_name": f"v{i}.mp4", "audio": None}


def test_adapter_turns_sample_dicts_into_clip_label_pairs():
    out = list(PytorchVideoClips(list(_fake_samples()), transform=VideoTrainTransform(16)))
    assert [y for _, y in out] == [5, 6, 7]
    assert all(c.shape == (3, 12, 16, 16) and c.dtype == torch.float32 for c, _ in out)


def test_adapter_subsamples_frames_evenly_like_the_vjepa_sampler():
    (clip, _), *_ = list(PytorchVideoClips(list(_fake_samples(1, t=12)), num_frames=4))
    assert clip.shape == (3, 4, 20, 24)
    # linspace(0, 12, 4) = 0, 4, 8, 12 -> clipped to 11
    assert clip[0, :, 0, 0].tolist() == [0.0, 4.0, 8.0, 11.0]


def test_adapter_turns_off_audio_decoding_on_datasets_built_elsewhere():
    class Fake(list):
        _decode_audio = True

    ds = Fake(_fake_samples(1))
    PytorchVideoClips(ds)
    assert ds._decode_audio is False


@pytest.mark.skipif(not pytorchvideo_available(), reason="pytorchvideo (extra jepa-video[pytorchvideo]) is not installed")
def test_real_pytorchvideo_labeled_dataset(tmp_path, demo_videos):
    from jepa_video.datasets import read_index
    from jepa_video.pytorchvideo_adapter import import_pytorchvideo, labeled_video_dataset

    pv = import_pytorchvideo()
    import pytorchvideo.transforms  # noqa: F401  - fails without the shim

    assert pv.__version__
    rows = read_index(demo_videos)[:3]
    csv = tmp_path / "pv.csv"
    csv.write_text("".join(f"{p} {y}\n" for p, y in rows))
    ds = labeled_video_dataset(str(csv), 1.0, sampling="uniform",
                               video_sampler=torch.utils.data.SequentialSampler)
    clips = list(PytorchVideoClips(ds, transform=VideoTrainTransform(16), num_frames=4))
    assert [y for _, y in clips] == [y for _, y in rows]
    assert all(c.shape == (3, 4, 16, 16) for c, _ in clips)


def test_missing_pytorchvideo_names_the_extra(monkeypatch):
    from jepa_core.extras import MissingExtraError
    from jepa_video import pytorchvideo_adapter

    monkeypatch.setattr(pytorchvideo_adapter, "pytorchvideo_available", lambda: False)
    with pytest.raises(MissingExtraError, match=r"pip install 'jepa-video\[pytorchvideo\]'"):
        pytorchvideo_adapter.import_pytorchvideo()
