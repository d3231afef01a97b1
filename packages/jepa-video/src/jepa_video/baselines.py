"""Baselines for the video probes: an image encoder applied frame by frame.

V-JEPA (Bardes et al. 2024, Sec. 5) measures what video pretraining adds by probing image
encoders (I-JEPA among them) on the same video tasks, each frame encoded on its own. Here the
image encoder is, by ``baseline.image_encoder``:

- ``"ijepa"``: an I-JEPA pretrained for the occasion on frames of the training clips (the
  frames the video model saw, at the same resolution, with the same width, depth, heads and
  patch size), through jepa-core's method registry, so jepa-video never imports jepa-image (it
  is used when installed, and the baseline is skipped with a message when not);
- a path: the target encoder of an earlier `jepa pretrain <image method>` run folder or
  checkpoint;
- None: no image baseline.

The encoder is wrapped in :class:`jepa_core.nn.FrameByFrame` (every ``tubelet_size``-th frame,
so it gives as many tokens as the video encoder), and probed like the video encoders.
``baseline.temporal_embedding`` adds a sin-cos table over the frame index to its tokens; off by
default, as an image model knows nothing of time (with it, the probe knows the frame order).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from jepa_core import registry
from jepa_core.config import ConfigError
from torch import nn

from jepa_video.nn import FrameByFrame

from .transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

__all__ = ["FrameBaselineConfig", "frame_baseline", "write_frames"]


@dataclass
class FrameBaselineConfig:
    """The image encoder probed frame by frame beside the video encoders (module docstring)."""

    image_encoder: str | None = None  # "ijepa" | a run folder / checkpoint path | None
    preset: str = "demo"  # "ijepa": the I-JEPA preset its settings start from
    epochs: int = 4  # "ijepa": pretraining epochs over the frames
    frames_per_clip: int | None = None  # "ijepa": frames taken from each training clip; None: data.frames_per_clip
    overrides: tuple[str, ...] = ()  # "ijepa": more dotted overrides of its config
    temporal_embedding: bool = False


def write_frames(dataset, out: Path, max_clips: int | None = None) -> int:
    """Write the frames of ``dataset``'s clips (a :class:`jepa_video.datasets.ClipDataset`,
    sampled by its own clip sampler, before any transform) as PNG files into
    ``out/train/<label>/``, the image-folder layout; returns the number of frames. Written into
    a temporary folder and renamed, so an interrupted run never leaves half a set."""
    from PIL import Image

    if (out / "train").is_dir():
        return sum(1 for _ in (out / "train").rglob("*.png"))
    tmp = out.parent / f".{out.name}.tmp"
    n_clips = len(dataset) if max_clips is None else min(max_clips, len(dataset))
    count = 0
    for i in range(n_clips):
        label = dataset.samples[i][1]
        folder = tmp / "train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for c, clip in enumerate(dataset.load_clips(i)):
            for t, frame in enumerate(np.asarray(clip)):
                Image.fromarray(frame).save(folder / f"{i:06d}_{c}_{t:03d}.png")
                count += 1
    tmp.rename(out)
    return count


def _image_overrides(cfg, frames_root: Path) -> list[str]:
    from .vjepa import _encoder_dims

    dim, depth, heads, _ = _encoder_dims(cfg.model)
    d, b = cfg.data, cfg.baseline
    return [
        "data.dataset=imagefolder", f"data.root={frames_root}", f"data.image_size={d.crop_size}",
        f"data.mean=[{','.join(map(str, IMAGENET_MEAN))}]", f"data.std=[{','.join(map(str, IMAGENET_STD))}]",
        "data.num_workers=0", "model.encoder=custom", f"model.in_chans={cfg.model.in_chans}",
        f"model.patch_size={cfg.model.patch_size}", f"model.embed_dim={dim}", f"model.depth={depth}",
        f"model.num_heads={heads}", f"optim.epochs={b.epochs}", "eval.enabled=false", "eval.monitor_every=0",
        f"train.device={cfg.train.device}", f"train.seed={cfg.train.seed}", *b.overrides,
    ]


def _pretrain_image_encoder(cfg, run_dir: Path) -> tuple[str, nn.Module] | None:
    from jepa_core.run import load_run, pretrain

    from .vjepa import _sampler, _train_source_dataset

    try:
        spec = registry.get_method("ijepa")
    except ConfigError:
        log.warning("baseline.image_encoder=ijepa needs jepa-image (pip install jepa-image); "
                    "the frame-by-frame image baseline is skipped")
        return None
    folder = run_dir / "image_baseline"
    sampler = _sampler(cfg.data, train=False)
    if cfg.baseline.frames_per_clip is not None:
        sampler = replace(sampler, frames_per_clip=cfg.baseline.frames_per_clip)  # ClipSampler is frozen
    n = write_frames(_train_source_dataset(cfg, sampler), folder / "frames")
    log.info("image baseline: I-JEPA on %d frames of the training clips, in %s", n, folder)
    overrides = _image_overrides(cfg, folder / "frames")
    resume = (folder / "run" / "checkpoints").is_dir() and any((folder / "run" / "checkpoints").iterdir())
    pretrain(spec.name, cfg.baseline.preset, None, overrides, folder / "run", resume)
    model = load_run(folder / "run")["model"]
    return f"image encoder ({spec.name} on frames), frame by frame", model.eval_encoder()


def frame_baseline(cfg, device: torch.device | str, run_dir: Path | None) -> dict[str, nn.Module]:
    """``{row name: encoder}`` for the probes (``MethodSpec.eval_baselines``), from
    ``cfg.baseline`` (:class:`FrameBaselineConfig`); empty when there is no image baseline."""
    from jepa_core.run import load_run

    b = cfg.baseline
    if not b.image_encoder:
        return {}
    if b.image_encoder == "ijepa":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Rank 0 evaluates alone after a torchrun job; a nested run would join the launcher's group.
            log.warning("baseline.image_encoder=ijepa is not trained inside a multi-process run; run "
                        "`jepa eval <run folder>` afterwards for the frame-by-frame image baseline")
            return {}
        if run_dir is None:
            raise ConfigError("baseline.image_encoder=ijepa pretrains into the run folder; none was given")
        found = _pretrain_image_encoder(cfg, Path(run_dir))
        if found is None:
            return {}
        name, encoder = found
    else:
        path = Path(b.image_encoder)
        if not path.exists():
            raise ConfigError(f"baseline.image_encoder: {path} does not exist (give a `jepa pretrain` run folder "
                              "or checkpoint of an image method, 'ijepa', or null)")
        run = load_run(path)
        name, encoder = f"image encoder ({run['spec'].name}, {path.name}), frame by frame", run["model"].eval_encoder()
    if getattr(encoder, "in_chans", cfg.model.in_chans) != cfg.model.in_chans:
        raise ConfigError(f"the image encoder takes {encoder.in_chans} channels, the clips have {cfg.model.in_chans}")
    wrapped = FrameByFrame(encoder, stride=cfg.model.tubelet_size, temporal_embedding=b.temporal_embedding)
    if b.temporal_embedding:
        name += " + frame-index table"
    return {name: wrapped.to(device).eval()}
