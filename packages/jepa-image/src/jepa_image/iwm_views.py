"""Paired source/target views with recorded transformation parameters, for Image World Models.

IWM (Garrido et al. 2024, "Learning and Leveraging World Models in Visual Representation
Learning", arXiv 2403.00504) trains a predictor to map the representation of a *source* view
``x`` to that of a *target* view ``y``, conditioned on the transformation between them (the
"action" ``a_{x->y}``). Views, as in the IWM paper (arXiv 2403.00504), method section and appendix:

- One shared random-resized crop + horizontal flip of the image gives ``I'``; both views share it.
- Target ``y``: colour jitter of ``I'`` only (p=0.8; brightness 0.4, contrast 0.4, saturation 0.2,
  hue 0.1).
- Source ``x``: its own independent colour jitter of ``I'`` (same settings), then the source-only
  destructive augmentations grayscale (p=0.2), Gaussian blur (p=0.2) and solarisation (p=0.1 in
  the appendix table; the prose says 0.2). ``source="from_target"`` is the other reading,
  ``x = F_x(y)``: the source's jitter and destructive ops act on ``y`` instead of ``I'``.
- Within a view: jitter in the fixed order brightness, contrast, saturation, hue, then grayscale,
  blur, solarise. The order is not stated in the sources we could check; a fixed order makes the
  parameters a complete description of the view.

Parameters of a view (:data:`VIEW_PARAMS`, a float tensor ``[B, 7]``): brightness, contrast and
saturation factors, hue shift, grayscale flag (0/1), blur sigma (0 = no blur), solarise flag
(0/1); the identity is ``(1, 1, 1, 0, 0, 0, 0)``. :func:`apply_view` applies them batched and
matches ``torchvision.transforms.v2.functional`` applied per sample.

The action (:data:`ACTION_NAMES`, ``[B, 7]``, :func:`action_vector`): the jitter differences
target minus source (brightness, contrast, saturation, hue), then the source's destructive flags
(grayscale, blur, solarise). All zeros (:func:`null_action`) means "no change".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from jepa_core.config import ConfigError, ranges, validate

from jepa_image.data import BatchRandomResizedCrop

__all__ = [
    "ACTION_DIM", "ACTION_NAMES", "IDENTITY_PARAMS", "NULL_ACTION", "VIEW_PARAMS", "IWMViewConfig",
    "PairedViews", "action_vector", "apply_view", "blur_kernel_size", "null_action", "pair_transform",
    "reapply", "sample_view_params",
]

VIEW_PARAMS = ("brightness", "contrast", "saturation", "hue", "grayscale", "blur_sigma", "solarize")
IDENTITY_PARAMS = (1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
ACTION_NAMES = ("d_brightness", "d_contrast", "d_saturation", "d_hue", "grayscale", "blur", "solarize")
ACTION_DIM = len(ACTION_NAMES)
NULL_ACTION = (0.0,) * ACTION_DIM
SourceMode = Literal["independent", "from_target"]


@ranges(crop_scale="(0,1] ordered", hflip_p="[0,1]", jitter_p="[0,1]", brightness=">=0", contrast=">=0",
        saturation=">=0", hue="[0,0.5]", grayscale_p="[0,1]", blur_p="[0,1]", blur_sigma=">0 ordered",
        solarize_p="[0,1]", solarize_threshold="[0,1]")
@dataclass
class IWMViewConfig:
    """The view distribution. Sources: the IWM paper (arXiv 2403.00504), method section and appendix."""

    crop_scale: tuple[float, float] = (0.3, 1.0)  # not stated in the sources we could check; I-JEPA's
    hflip_p: float = 0.5  # the shared flip; p not stated in the sources we could check (the usual 0.5)
    jitter_p: float = 0.8  # paper: colour jitter p=0.8, for each view independently
    brightness: float = 0.4  # paper
    contrast: float = 0.4  # paper
    saturation: float = 0.2  # paper
    hue: float = 0.1  # paper; a hue shift in [-hue, hue], hue <= 0.5
    grayscale_p: float = 0.2  # paper: source only
    blur_p: float = 0.2  # paper: source only
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # not stated in the sources we could check; I-JEPA's
    solarize_p: float = 0.1  # paper appendix table (the prose says 0.2); source only
    solarize_threshold: float = 0.5  # not stated in the sources we could check; the usual 0.5 (128/255)
    source: SourceMode = "independent"  # "from_target": x = F_x(y), the other reading of the paper

    def check(self, prefix: str) -> None:
        """What ranges cannot express: the pairs have two values, ``source`` is a known mode."""
        key = (prefix + ".") if prefix else ""
        for name in ("crop_scale", "blur_sigma"):
            if len(getattr(self, name)) != 2:
                raise ConfigError(f"{key}{name} is a (low, high) pair, got {key}{name}={list(getattr(self, name))}")
        if self.source not in get_args(SourceMode):
            raise ConfigError(f"{key}source must be one of {list(get_args(SourceMode))}, got {key}source={self.source}")


def sample_view_params(cfg: IWMViewConfig, n: int, generator: torch.Generator, source: bool) -> torch.Tensor:
    """``[n, 7]`` view parameters (:data:`VIEW_PARAMS`), from ``generator`` only. Every row takes
    the same 9 uniforms (one ``[n, 9]`` draw), so row ``i`` depends only on the generator's
    state, not on ``n``: the draws for ``n`` rows are a prefix of those for more rows. Target
    views (``source=False``) never get the destructive ops."""
    u = torch.rand(n, 9, generator=generator, dtype=torch.float64)
    jitter = u[:, 0] < cfg.jitter_p

    def factor(s: float, v: torch.Tensor) -> torch.Tensor:
        lo = max(0.0, 1.0 - s)
        return torch.where(jitter, lo + (1.0 + s - lo) * v, torch.ones_like(v))

    hue = torch.where(jitter, cfg.hue * (2.0 * u[:, 4] - 1.0), torch.zeros_like(u[:, 4]))
    lo, hi = cfg.blur_sigma
    on = torch.full((n,), bool(source))
    gray = on & (u[:, 5] < cfg.grayscale_p)
    sigma = torch.where(on & (u[:, 6] < cfg.blur_p), lo + (hi - lo) * u[:, 7], torch.zeros_like(u[:, 7]))
    sol = on & (u[:, 8] < cfg.solarize_p)
    cols = [factor(cfg.brightness, u[:, 1]), factor(cfg.contrast, u[:, 2]), factor(cfg.saturation, u[:, 3]),
            hue, gray.double(), sigma, sol.double()]
    return torch.stack(cols, 1).float()


def _gray(img: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` luma of an RGB batch (ITU-R 601-2 weights, as torchvision)."""
    r, g, b = img.unbind(1)
    return (r * 0.2989 + g * 0.587 + b * 0.114).unsqueeze(1)


def _shift_hue(img: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, ``h += shift (mod 1)``, -> RGB; ``shift`` is ``[B, 1, 1]``."""
    v, _ = img.max(1)
    m, _ = img.min(1)
    d = v - m
    flat = d == 0
    dd = torch.where(flat, torch.ones_like(d), d)
    s = d / torch.where(flat, torch.ones_like(v), v)
    r, g, b = img.unbind(1)
    h = torch.where(v == r, (g - b) / dd, torch.where(v == g, 2.0 + (b - r) / dd, 4.0 + (r - g) / dd))
    h = torch.where(flat, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0 + shift, 1.0)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    cand = torch.stack([v, q, p, t], 1)  # channel k of sector i takes cand[_HSV_PICK[k][i]]
    pick = _HSV_PICK.to(img.device)[:, sector.long().remainder(6)].movedim(0, 1)
    return cand.gather(1, pick)


# sector:              0  1  2  3  4  5
_HSV_PICK = torch.tensor([[0, 1, 2, 2, 3, 0],   # red:   v q p p t v
                          [3, 0, 0, 1, 2, 2],   # green: t v v q p p
                          [2, 2, 3, 0, 0, 1]])  # blue:  p p t v v q


def blur_kernel_size(sigma: float, side: int) -> int:
    """``2 * ceil(3 sigma) + 1``, capped to the largest odd number <= ``side``."""
    return min(2 * math.ceil(3 * sigma) + 1, side - (1 - side % 2))


def _blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur with reflect padding, one grouped conv per axis at the batch's
    largest kernel; each row's taps beyond its own kernel get weight 0, so a row equals
    ``gaussian_blur(img, [kx, ky], [sigma, sigma])`` at its own kernel size."""
    B, C, H, W = img.shape
    sig = sigma.double().tolist()
    out = img
    for axis, side in ((3, W), (2, H)):
        ks = torch.tensor([blur_kernel_size(s, side) for s in sig], dtype=torch.float64, device=img.device)
        K = int(ks.max())
        x = torch.arange(K, dtype=torch.float64, device=img.device) - (K - 1) / 2
        logits = -(x[None] / (math.sqrt(2.0) * sigma.double()[:, None])) ** 2
        logits = logits.masked_fill(x[None].abs() > (ks[:, None] - 1) / 2, -math.inf)
        w = torch.softmax(logits, 1).to(img.dtype).repeat_interleave(C, 0)  # [B*C, K]
        pad = [K // 2, K // 2, 0, 0] if axis == 3 else [0, 0, K // 2, K // 2]
        xp = F.pad(out.reshape(1, B * C, H, W), pad, mode="reflect")
        kernel = w.view(B * C, 1, 1, K) if axis == 3 else w.view(B * C, 1, K, 1)
        out = F.conv2d(xp, kernel, groups=B * C).view(B, C, H, W)
    return out


def apply_view(images: torch.Tensor, params: torch.Tensor, cfg: IWMViewConfig | None = None) -> torch.Tensor:
    """Apply per-sample view parameters ``[B, 7]`` to float images ``[B, C, H, W]`` in [0, 1]
    (C = 1 or 3), batched: brightness, contrast, saturation, hue, grayscale, blur, solarise,
    each as ``torchvision.transforms.v2.functional`` does it (clamped where it clamps; on one
    channel saturation, hue and grayscale are the identity). Identity entries leave a row as is."""
    cfg = cfg or IWMViewConfig()
    C = images.shape[1]
    if C not in (1, 3):
        raise ValueError(f"apply_view takes 1 or 3 channels, got {C}")
    params = params.to(images.device, images.dtype)
    p = params.view(-1, 7, 1, 1, 1).unbind(1)
    x = (images * p[0]).clamp(0, 1)
    mean = (_gray(x) if C == 3 else x).mean((1, 2, 3), keepdim=True)
    x = (x * p[1] + mean * (1 - p[1])).clamp(0, 1)
    if C == 3:
        x = (x * p[2] + _gray(x) * (1 - p[2])).clamp(0, 1)
        hue = params[:, 3] != 0
        if hue.any():
            x = x.clone()
            x[hue] = _shift_hue(x[hue], p[3][hue].view(-1, 1, 1))
        x = torch.where(p[4] > 0.5, _gray(x).expand_as(x), x)
    blur = params[:, 5] > 0
    if blur.any():
        x = x.clone()
        x[blur] = _blur(x[blur], params[blur, 5])
    return torch.where((p[6] > 0.5) & (x >= cfg.solarize_threshold), 1.0 - x, x)


def reapply(images01_shared: torch.Tensor, params: torch.Tensor, cfg: IWMViewConfig | None = None) -> torch.Tensor:
    """Re-make a view from the shared view ``I'`` (float, [0, 1]) and its recorded parameters."""
    return apply_view(images01_shared, params, cfg)


def action_vector(params_source: torch.Tensor, params_target: torch.Tensor,
                  source_mode: SourceMode = "independent") -> torch.Tensor:
    """The action ``a_{x->y}``, ``[B, 7]`` (:data:`ACTION_NAMES`): target minus source for the
    brightness, contrast and saturation factors and the hue shift (unwrapped), then the source's
    grayscale, blur (1 if its sigma > 0) and solarise flags. In ``"from_target"`` mode the
    source's jitter acts on ``y``, so the differences are identity minus source:
    ``(1 - b_x, 1 - c_x, 1 - s_x, 0 - h_x)``."""
    if source_mode not in get_args(SourceMode):
        raise ValueError(f"unknown source mode {source_mode!r}; expected one of {list(get_args(SourceMode))}")
    ref = params_target[:, :4] if source_mode == "independent" else params_source.new_tensor(IDENTITY_PARAMS[:4])
    flags = torch.stack([params_source[:, 4], (params_source[:, 5] > 0).to(params_source.dtype), params_source[:, 6]], 1)
    return torch.cat([ref - params_source[:, :4], flags], 1)


def null_action(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[n, 7]`` zeros: no change (ask the predictor for the source's own, untransformed view)."""
    return torch.zeros(n, ACTION_DIM, device=device, dtype=dtype)


class _GivenBoxes(BatchRandomResizedCrop):
    """:class:`BatchRandomResizedCrop`'s resampling at given boxes, without normalising."""

    def __init__(self, size: int, boxes: torch.Tensor, channels: int):
        super().__init__(size, mean=(0.0,) * channels, std=(1.0,) * channels)
        self._given = boxes

    def boxes(self, B, H, W, g, tries=10):
        return self._given


class PairedViews:
    """Batch transform for :class:`jepa_core.masks.collator.MaskCollator`: the IWM source and
    target views of a batch, with everything needed to re-make them.

    ``crop=True``: the input is a uint8 batch ``[B, C, H, W]``; the shared random-resized crop
    (``BatchRandomResizedCrop``'s box rule) and flip (p = ``hflip_p`` per sample) are drawn here.
    ``crop=False``: the input already is ``I'`` (uint8, or float in [0, 1], e.g. from
    :func:`pair_transform`); ``crop_boxes`` are then the full frame and ``flipped`` all False
    (only what this transform did). Returns ``(source, fields)``: normalised source views and
    ``target_images`` (normalised), ``params_source``, ``params_target``, ``action``,
    ``crop_boxes`` (``[B, 4]`` top, left, height, width) and ``flipped`` (``[B]`` bool).

    Three streams, seeded by three integers drawn first from the given generator: crop + flip,
    target parameters, source parameters. All are drawn for the ``total`` samples of the global
    batch and ``slots`` picks this process's rows, so 2 processes x B = 1 process x 2B.
    """

    def __init__(self, cfg: IWMViewConfig, size: int, mean, std, crop: bool = True):
        validate(cfg)
        self.cfg, self.size, self.crop = cfg, size, crop
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def shared_view(self, images: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """``I'`` in [0, 1] from uint8 ``images`` and recorded ``boxes``/``flipped`` (exactly as emitted)."""
        out = _GivenBoxes(self.size, boxes, images.shape[1])(images, torch.Generator()).clamp_(0, 1)
        return torch.where(flipped.view(-1, 1, 1, 1), out.flip(-1), out)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, inputs: torch.Tensor, generator: torch.Generator, slots: torch.Tensor | None = None,
                 total: int | None = None):
        B, C, H, W = inputs.shape
        n = B if total is None else total
        rows = torch.arange(B) if slots is None else torch.as_tensor(slots, dtype=torch.long)
        seeds = torch.randint(0, 2**62, (3,), generator=generator).tolist()
        g_crop, g_tgt, g_src = (torch.Generator().manual_seed(s) for s in seeds)
        if self.crop:
            if inputs.dtype != torch.uint8:
                raise TypeError(f"PairedViews(crop=True) takes a uint8 batch, got {inputs.dtype}")
            boxes = BatchRandomResizedCrop(self.size, self.cfg.crop_scale).boxes(n, H, W, g_crop)[rows]
            flipped = (torch.rand(n, generator=g_crop, dtype=torch.float64) < self.cfg.hflip_p)[rows]
            shared = self.shared_view(inputs, boxes, flipped)
        else:
            shared = inputs.float() / 255.0 if inputs.dtype == torch.uint8 else inputs.float()
            boxes = torch.tensor([[0.0, 0.0, H, W]], dtype=torch.float64).expand(B, 4).clone()
            flipped = torch.zeros(B, dtype=torch.bool)
        p_tgt = sample_view_params(self.cfg, n, g_tgt, source=False)[rows]
        p_src = sample_view_params(self.cfg, n, g_src, source=True)[rows]
        y = apply_view(shared, p_tgt, self.cfg)
        x = apply_view(shared if self.cfg.source == "independent" else y, p_src, self.cfg)
        return self.normalize(x), {
            "target_images": self.normalize(y), "params_source": p_src, "params_target": p_tgt,
            "action": action_vector(p_src, p_tgt, self.cfg.source), "crop_boxes": boxes, "flipped": flipped,
        }


def pair_transform(size: int, crop_scale=(0.3, 1.0), hflip_p: float = 0.5):
    """The shared geometric part for image-folder datasets, per sample (torchvision v2, global
    RNG): RandomResizedCrop + RandomHorizontalFlip to a uint8 tensor ``[C, size, size]``, not
    normalised; :class:`PairedViews` with ``crop=False`` does the rest on the batch."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True),
                       v2.RandomHorizontalFlip(hflip_p), v2.ToDtype(torch.uint8, scale=True), v2.ToPureTensor()])
