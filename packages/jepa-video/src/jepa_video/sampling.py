"""Clip sampling as in the official V-JEPA / V-JEPA 2 video datasets.

A clip is ``frames_per_clip`` frame indices spread over a window of
``clip_len = frames_per_clip * frame_step`` source frames. The frame step is given directly
(``frame_step``, V-JEPA: 4), or from a target rate (``fps``, V-JEPA 2: 4, giving
``step = ceil(video_fps) // fps``), or from a clip length in seconds (``duration``, giving
``step = int(duration * video_fps / frames_per_clip)``); exactly one of the three is set.

The video is cut into ``num_clips`` equal partitions of ``num_frames // num_clips`` frames and
one clip is drawn from each:

* partition longer than ``clip_len``: the window ends at a random ``end`` in
  ``[clip_len, partition_len)`` (``end = clip_len`` when ``random_clip_sampling`` is off), and
  the indices are ``linspace(end - clip_len, end, frames_per_clip)`` clipped to ``end - 1`` and
  truncated to integers (so the spacing is ``clip_len / (frames_per_clip - 1)``, about 4.27 for
  16 x 4, not exactly 4), offset by the partition's start;
* otherwise (short video) the whole partition is covered by
  ``linspace(0, partition_len, partition_len // frame_step)`` and the clip is padded to
  ``frames_per_clip`` by repeating the partition's last frame; with ``allow_clip_overlap``
  the official alternative is used instead (windows of ``min(clip_len, num_frames) - 1``
  frames, the clips of the partitions placed ``(num_frames - clip_len) // (num_clips - 1)``
  apart, so they may overlap).

The only randomness is the window end, drawn with ``torch.randint`` from ``generator`` (the
global torch generator when None, which :class:`jepa_core.data.StampedDataset` seeds per
sample), so the indices are a deterministic function of the generator's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ClipSampler", "ShortVideoError", "frame_step_for", "sample_clip_indices"]

SHORT_VIDEO_POLICIES = ("pad", "skip")


class ShortVideoError(ValueError):
    """A video too short for a clip, with ``ClipSampler(short_videos="skip")``."""


def frame_step_for(
    video_fps: float | None,
    frames_per_clip: int,
    frame_step: int | None = None,
    fps: float | None = None,
    duration: float | None = None,
) -> int:
    """The source-frame step from exactly one of ``frame_step``, ``fps``, ``duration``.

    ``fps``: ``ceil(video_fps) // fps`` (V-JEPA 2; a 30 fps video at fps=4 gives 7).
    ``duration``: ``int(duration * video_fps / frames_per_clip)`` (V-JEPA's ``clip_duration``).
    The result is at least 1 (the official code would build an empty window for a video slower
    than the target rate).
    """
    given = [x is not None for x in (frame_step, fps, duration)]
    if sum(given) != 1:
        raise ValueError("set exactly one of frame_step, fps, duration "
                         f"(got frame_step={frame_step}, fps={fps}, duration={duration})")
    if frame_step is not None:
        if frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {frame_step}")
        return int(frame_step)
    if not video_fps or video_fps <= 0:
        raise ValueError("the video's frame rate is unknown; use frame_step instead of fps/duration")
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        step = math.ceil(video_fps) // fps
    else:
        if duration <= 0:  # type: ignore[operator]
            raise ValueError(f"duration must be > 0, got {duration}")
        step = duration * video_fps / frames_per_clip  # type: ignore[operator]
    return max(int(step), 1)


def sample_clip_indices(
    num_frames: int,
    frames_per_clip: int,
    frame_step: int,
    num_clips: int = 1,
    random_clip_sampling: bool = True,
    allow_clip_overlap: bool = False,
    generator: torch.Generator | None = None,
) -> list[np.ndarray]:
    """``num_clips`` int64 arrays of ``frames_per_clip`` frame indices into a video of
    ``num_frames`` frames (see the module doc for the rule)."""
    if frames_per_clip < 1 or frame_step < 1 or num_clips < 1:
        raise ValueError("frames_per_clip, frame_step and num_clips must be >= 1")
    if num_frames < 1:
        raise ValueError("the video has no frames")
    fpc = frames_per_clip
    clip_len = fpc * frame_step
    part_len = num_frames // num_clips
    if part_len < 1:
        raise ValueError(f"{num_frames} frames cannot be split into {num_clips} clips")
    clips = []
    idx: np.ndarray
    for i in range(num_clips):
        if part_len > clip_len:
            end = clip_len
            if random_clip_sampling:
                end = int(torch.randint(clip_len, part_len, (1,), generator=generator))
            start = end - clip_len
            idx = np.linspace(start, end, num=fpc)
            idx = np.clip(idx, start, end - 1).astype(np.int64) + i * part_len
        elif not allow_clip_overlap:
            n = part_len // frame_step
            idx = np.linspace(0, part_len, num=n)
            idx = np.concatenate([idx, np.full(fpc - n, float(part_len))])
            idx = np.clip(idx, 0, part_len - 1).astype(np.int64) + i * part_len
        else:
            span = min(clip_len, num_frames) - 1
            n = span // frame_step
            idx = np.linspace(0, span, num=n)
            idx = np.concatenate([idx, np.full(fpc - n, float(span))])
            # As the official code: clipped to span - 1 (the window's last frame is never used).
            idx = np.clip(idx, 0, max(span - 1, 0)).astype(np.int64)
            offset = (num_frames - clip_len) // (num_clips - 1) if num_frames > clip_len and num_clips > 1 else 0
            idx = idx + i * offset
        clips.append(idx)
    return clips


@dataclass(frozen=True)
class ClipSampler:
    """Official clip sampling with its settings; call it with a video's length and frame rate.

    >>> s = ClipSampler(frames_per_clip=16, frame_step=4)
    >>> [c.shape for c in s(300, 30.0, torch.Generator().manual_seed(0))]
    [(16,)]
    """

    frames_per_clip: int = 16
    frame_step: int | None = None
    fps: float | None = None
    duration: float | None = None
    num_clips: int = 1
    random_clip_sampling: bool = True
    allow_clip_overlap: bool = False
    #: a video with fewer frames than a clip spans: "pad" repeats its last frame (the official
    #: rule; the datasets log it once per file), "skip" raises ShortVideoError (the datasets
    #: turn it into a skipped, counted sample)
    short_videos: str = "pad"

    def __post_init__(self) -> None:
        if self.short_videos not in SHORT_VIDEO_POLICIES:
            raise ValueError(f"ClipSampler: short_videos must be one of {SHORT_VIDEO_POLICIES}, "
                             f"got {self.short_videos!r}")
        if sum(x is not None for x in (self.frame_step, self.fps, self.duration)) != 1:
            raise ValueError("ClipSampler: set exactly one of frame_step, fps, duration "
                             f"(got frame_step={self.frame_step}, fps={self.fps}, duration={self.duration})")
        if self.frames_per_clip < 1 or self.num_clips < 1:
            raise ValueError("frames_per_clip and num_clips must be >= 1")

    def step_for(self, video_fps: float | None) -> int:
        return frame_step_for(video_fps, self.frames_per_clip, self.frame_step, self.fps, self.duration)

    def padding(self, num_frames: int, video_fps: float | None = None) -> int:
        """How many frames of a clip are repeats added because the video is too short (0 for
        a long enough video): ``frames_per_clip`` minus the distinct frames of the worst clip."""
        clips = sample_clip_indices(num_frames, self.frames_per_clip, self.step_for(video_fps), self.num_clips,
                                    False, self.allow_clip_overlap)
        return max(self.frames_per_clip - len(np.unique(c)) for c in clips)

    def __call__(self, num_frames: int, video_fps: float | None = None,
                 generator: torch.Generator | None = None) -> list[np.ndarray]:
        if self.short_videos == "skip" and num_frames >= 1:
            n = self.padding(num_frames, video_fps)
            if n:
                raise ShortVideoError(f"{num_frames} frames, too short for a clip of {self.frames_per_clip} "
                                      f"frames every {self.step_for(video_fps)} ({n} would be repeats; "
                                      f"short_videos='skip')")
        return sample_clip_indices(
            num_frames, self.frames_per_clip, self.step_for(video_fps), self.num_clips,
            self.random_clip_sampling, self.allow_clip_overlap, generator,
        )
