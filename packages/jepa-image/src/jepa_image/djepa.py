"""D-JEPA (Chen et al., ICLR 2025, arXiv 2410.03755): JEPA's masked prediction read as
generalised next-token prediction, with a per-token denoising head.

A context encoder sees the visible continuous tokens (pixel patches or VAE latents) after a
class-conditional buffer; a feature predictor (an MAE-style decoder) outputs a feature ``z_i``
for every token; two losses act on the masked tokens:

- the **diffusion loss**: a small AdaLN MLP models ``p(x_i | z_i)`` (cosine Gaussian diffusion
  with learned variance, or flow matching), each token repeated ``diffusion_batch_mul`` times
  with fresh noise (:mod:`jepa_core.generative`);
- the **JEPA loss**: a projection of ``z_i`` (Linear-GELU-LayerNorm-Linear, decoder width to
  encoder width) regresses, by smooth L1 with beta 2, the features that a full EMA copy of the
  model's encoder gives token ``i`` when it sees every token (no mask, true label, eval mode).

Images are generated set by set of tokens on the cosine schedule with classifier-free guidance
(:meth:`DJEPA.generate`, `jepa sample`), always from the EMA copy.

Faithful to the released code where it exists (``djepa:models/djepa.py``, ``djepa:models/block.py``,
``djepa:engine/djepa.py``, ``djepa:main_djepa.py``, ``djepa:scripts/djepa_base.sh``; the module and
parameter names here are the released state-dict names, so :mod:`jepa_image.djepa_convert` maps
their checkpoints one to one):

- tokens: ``F.unfold`` patches of the (latent) image, ``(x - shift) * scale`` VAE latents
  (KL-16, 16 channels, stride 16, scale 0.2325), 256 tokens of dim 16 at 256 px;
- masking: one ratio per batch from a normal of mode 1, std 0.25 truncated to [0.7, 1],
  ``ceil(L r)`` tokens masked along a random order per sample;
- encoder: Linear(token -> D) + learned position table, prepend ``buffer + class embedding``
  (64 learned tokens, never masked), drop the masked tokens, LayerNorm, pre-LN blocks with
  RMS qk-norm and dropout 0.1, final LayerNorm; the label is replaced by a learned null
  embedding with probability 0.1 (classifier-free guidance);
- predictor: Linear(D -> D_dec), mask tokens at the masked places, a learned position table on
  the image slots, blocks, LayerNorm, buffer dropped;
- losses weighted 1 and 1 (``--diffusion_weight 1.0 --jepa_weight 1.0``); ``model.jepa_weight=0``
  is MAR (diffusion loss only);
- EMA of the whole model (encoder, predictor, denoiser and projection) at a constant 0.9999;
  AdamW (0.9, 0.95), eps 1e-6, weight decay 0.02 off the biases, norms, embeddings, buffer,
  position tables, denoiser and projection; linear warm-up over 100 epochs then a constant LR
  ``1e-4 x global batch / 256``; gradient clipping 3.0.

Where this differs from the released code, and why:

- the diffusion loss is computed on the masked tokens only; the released code runs the head
  on every token and weights the masked ones (the same loss in expectation, ~13 % less compute);
- masks, orders and label dropout are drawn in the collator from (seed, step) generators, so a
  killed run resumes bit for bit (the released code uses numpy / torch global state);
- the Trainer clips gradients only after warm-up (the released code clips from the first
  step), and applies AdamW's weight decay as given: the released run's weight-decay schedule
  (``util/wd_sched.py``) is not in its repository;
- files the released code imports but does not contain (``models/diffloss.py``,
  ``models/jepaloss.py``, ``models/pretrained_vae.py``, ``util/*``) are filled from MAR
  (``mar:models/diffloss.py``) and from the call signatures; the projection's layout
  (``jepaloss.pred.{fc1,norm,fc2}``) is that of a MAR-derived repository with the same calls
  and is not confirmed for D-JEPA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from jepa_core.config import BaseConfig, ConfigError, OptimConfig, TrainConfig, ranges
from jepa_core.generative import (
    DenoisingMLP,
    DiffusionLoss,
    FlowMatchingLoss,
    generate_tokens,
    mask_ratio_sampler,
)
from jepa_core.generative.sampler import mask_by_order, random_orders
from jepa_core.masks import MaskCollator, StepSeeds
from jepa_core.method import JEPAMethod
from jepa_core.registry import MethodSpec
from jepa_core.target import EMATarget
from torch import nn

from jepa_image import data as D

DJEPA_MASK_TAG = 0x646A6D  # "djm": the batch's mask ratio and orders
DJEPA_LABEL_TAG = 0x646A6C  # "djl": label dropout
DJEPA_FLIP_TAG = 0x646A66  # "djf": horizontal flips of in-memory images
VAE_EXTRA_HINT = "pip install 'jepa-image[vae]' (diffusers' AutoencoderKL)"

# ---------------------------------------------------------------------------------------------
# config


@ranges(image_size=">=1", num_classes=">=1", batch_size=">=1", num_workers=">=0")
@dataclass
class DJEPADataConfig:
    dataset: Literal["imagefolder", "fashion_mnist", "fashion_mnist_demo", "latents"] = "imagefolder"
    root: str | None = None
    """imagefolder: ``root/train/<class>/<image>``; fashion_mnist: the idx folder; latents: the
    ``.npz`` written by :func:`cache_latents` (latents of every image and of its mirror)."""
    image_size: int = 256
    num_classes: int = 1000
    hflip: bool = True  # random horizontal flip (released: ADM centre crop + flip)
    batch_size: int = 32  # per process (released script: 32 x 4 GPUs)
    num_workers: int = 10
    pin_memory: bool = True


@ranges(in_chans=">=1", patch_size=">=1", vae_stride=">=1", latent_channels=">=1", scale=">0", shift="any")
@dataclass
class TokenizerConfig:
    """What a token is. ``pixels``: ``patch_size`` x ``patch_size`` patches of the image in
    [-1, 1] (dim ``in_chans * patch_size**2``); ``vae``: ``patch_size`` x ``patch_size`` cells of
    the standardised latent map ``(z - shift) * scale`` of a diffusers ``AutoencoderKL``
    (``pip install 'jepa-image[vae]'``; dim ``latent_channels * patch_size**2``)."""

    kind: Literal["pixels", "vae"] = "vae"
    in_chans: int = 3
    patch_size: int = 1
    vae: str | None = None  # a diffusers AutoencoderKL folder or hub id (a KL-16 VAE for the released models)
    vae_stride: int = 16
    latent_channels: int = 16
    scale: float = 0.2325  # MAR's KL-16 (mar:engine_mar.py)
    shift: float = 0.0
    sample_posterior: bool = True  # training latents: a draw of the VAE posterior (else its mean)


@ranges(
    embed_dim=">=1", depth=">=1", num_heads=">=1", decoder_embed_dim=">=1", decoder_depth=">=1",
    decoder_num_heads=">=1", mlp_ratio=">0", attn_dropout="[0,1)", proj_dropout="[0,1)", buffer_size=">=0",
    label_drop_prob="[0,1]", mask_ratio_min="[0,1)", head_depth=">=1", head_width=">=1",
    diffusion_batch_mul=">=1", diffusion_steps=">=2", sample_steps=">=1", flow_time_shift=">0", clip_denoised=">0",
    diffusion_weight=">=0", jepa_weight=">=0", jepa_beta=">0",
)
@dataclass
class DJEPAModelConfig:
    """D-JEPA-B by default (``djepa:models/djepa.py`` ``djepa_base``)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 768
    decoder_depth: int = 12
    decoder_num_heads: int = 12
    mlp_ratio: float = 4.0
    qk_norm: bool = True  # the script's --qk_norm
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1
    buffer_size: int = 64
    label_drop_prob: float = 0.1
    mask_ratio_min: float = 0.7
    head: Literal["gauss", "flow"] = "gauss"
    head_depth: int = 6
    head_width: int = 1024
    diffusion_batch_mul: int = 4
    diffusion_steps: int = 1000  # training steps T of the Gaussian diffusion
    sample_steps: int = 100  # the head's sampling steps (diffusion: respaced chain; flow: Euler steps)
    flow_time_shift: float = 1.0
    clip_denoised: float | None = None
    """Gaussian head: clamp each sampling step's x_0 prediction to [-c, c] (None: as released).
    For pixel tokens in [-1, 1] (the demo) set 1: a briefly trained head otherwise diverges."""
    diffusion_weight: float = 1.0
    jepa_weight: float = 1.0  # 0: no JEPA loss (MAR)
    jepa_beta: float = 2.0
    grad_checkpointing: bool = False

    def check(self, prefix: str) -> None:
        for dim, heads, dk, hk in ((self.embed_dim, self.num_heads, "embed_dim", "num_heads"),
                                   (self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim",
                                    "decoder_num_heads")):
            if dim % heads:
                raise ConfigError(f"{prefix}.{dk}={dim} is not divisible by {prefix}.{hk}={heads}; "
                                  f"e.g. {prefix}.{hk}={math.gcd(dim, heads) or 1}")
        if self.diffusion_weight == 0 and self.jepa_weight == 0:
            raise ConfigError(f"{prefix}.diffusion_weight and {prefix}.jepa_weight are both 0: nothing to train")


@ranges(steps=">=1", cfg=">=1", temperature=">0", batch_size=">=1")
@dataclass
class DJEPASampleConfig:
    """Defaults of `jepa sample` and of the sample-quality evaluation (released: 64 steps, linear
    CFG; temperature 0.94 without guidance, cfg 3.0 with 0.98)."""

    steps: int = 64
    cfg: float = 1.0
    temperature: float = 0.94
    cfg_schedule: Literal["linear", "constant"] = "linear"
    batch_size: int = 64


@ranges(per_class=">=1", classifier_epochs=">=1", classifier_batch_size=">=1", probe_samples=">=1",
        inception_samples=">=2")
@dataclass
class SampleEvalConfig:
    """Settings of jepa-eval's ``sample_quality`` evaluator: ``per_class`` generated images per
    class scored by a small CNN trained once on the real training images (cached in
    ``<run>/eval_classifier.pt``): class accuracy, and the Frechet distance between the CNN's
    penultimate features of generated and held-out real images; optionally the linear probe of
    the EMA encoder (``probe``) and Inception FID (``inception``, needs ``jepa-eval[fid]``)."""

    per_class: int = 100
    classifier_epochs: int = 3
    classifier_batch_size: int = 128
    probe: bool = True
    probe_samples: int | None = None  # labelled images for the probe; None: all
    inception: bool = False
    inception_samples: int = 10000


@dataclass
class DJEPAConfig(BaseConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = (
        "model.*", "tokenizer.*", "data.image_size", "data.num_classes")
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = (
        "model.grad_checkpointing", "model.sample_steps", "model.flow_time_shift", "model.clip_denoised", "tokenizer.vae",
        "tokenizer.sample_posterior")

    method: str = "djepa"
    data: DJEPADataConfig = field(default_factory=DJEPADataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: DJEPAModelConfig = field(default_factory=DJEPAModelConfig)
    sample: DJEPASampleConfig = field(default_factory=DJEPASampleConfig)
    sample_eval: SampleEvalConfig = field(default_factory=SampleEvalConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=1400, warmup=100, start_lr=0.0, lr=1e-4, final_lr=1e-4, lr_schedule="constant",
        weight_decay=0.02, final_weight_decay=0.02, ema=(0.9999, 0.9999), betas=(0.9, 0.95), eps=1e-6,
        clip_grad=3.0, lr_scale_batch=256))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(precision="auto"))

    def check(self, prefix: str) -> None:
        grid_side(self)  # raises when the image is not a whole number of tokens
        if self.data.dataset == "latents" and self.tokenizer.kind != "vae":
            raise ConfigError("data.dataset=latents holds VAE latents: set tokenizer.kind=vae")


def grid_side(cfg: DJEPAConfig) -> int:
    """Tokens per side: ``image_size / patch_size`` (pixels) or ``image_size / vae_stride /
    patch_size`` (VAE)."""
    t, size = cfg.tokenizer, cfg.data.image_size
    stride = t.patch_size * (t.vae_stride if t.kind == "vae" else 1)
    if size % stride:
        what = "tokenizer.vae_stride x tokenizer.patch_size" if t.kind == "vae" else "tokenizer.patch_size"
        raise ConfigError(f"data.image_size={size} is not a multiple of {what} = {stride}; "
                          f"e.g. data.image_size={max(stride, size - size % stride)}")
    return size // stride


def token_dim(cfg: DJEPAConfig) -> int:
    t = cfg.tokenizer
    channels = t.latent_channels if t.kind == "vae" else t.in_chans
    return channels * t.patch_size**2


# ---------------------------------------------------------------------------------------------
# tokenizers


class PixelTokenizer(nn.Module):
    """Images in [-1, 1] are their own latent map (``encode`` / ``decode`` are the identity)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels, self.stride = channels, 1

    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)


class VAETokenizer(nn.Module):
    """A frozen diffusers ``AutoencoderKL``: ``encode(images in [-1, 1]) -> (z - shift) * scale``
    and back. Its weights are not part of the method's state dict."""

    def __init__(self, path: str | None, channels: int, stride: int, scale: float, shift: float):
        super().__init__()
        try:
            from diffusers import AutoencoderKL
        except ImportError as e:
            raise ConfigError(f"tokenizer.kind=vae needs diffusers, which is not installed: {VAE_EXTRA_HINT}; "
                              "or train on pixels with tokenizer.kind=pixels") from e
        if not path:
            raise ConfigError("tokenizer.kind=vae needs tokenizer.vae: a diffusers AutoencoderKL folder or hub id "
                              f"with {channels} latent channels and stride {stride}")
        self.vae = AutoencoderKL.from_pretrained(path)
        self.vae.requires_grad_(False).eval()
        got = int(self.vae.config.latent_channels)
        if got != channels:
            raise ConfigError(f"the VAE {path!r} has {got} latent channels but tokenizer.latent_channels={channels}")
        self.channels, self.stride, self.scale, self.shift = channels, stride, scale, shift

    @torch.no_grad()
    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        return ((z - self.shift) * self.scale).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        out = self.vae.decode((latents / self.scale + self.shift).to(self.vae.dtype)).sample
        return out.float().clamp(-1, 1)


def build_tokenizer(cfg: DJEPAConfig) -> nn.Module:
    """The tokenizer of ``cfg.tokenizer``: pixel patches, or the VAE (``tokenizer.kind=vae``, the
    ``vae`` extra)."""
    t = cfg.tokenizer
    if t.kind == "pixels":
        return PixelTokenizer(t.in_chans)
    return VAETokenizer(t.vae, t.latent_channels, t.vae_stride, t.scale, t.shift)


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, H, W] -> [B, (H/p)(W/p), C p p]``, channel-major within a patch (``F.unfold``, as
    released)."""
    return F.unfold(latents, kernel_size=p, stride=p).transpose(1, 2)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, side: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid of ``side`` tokens."""
    return F.fold(tokens.transpose(1, 2), output_size=(side * p, side * p), kernel_size=p, stride=p).reshape(
        tokens.shape[0], channels, side * p, side * p)


# ---------------------------------------------------------------------------------------------
# model


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Attention(nn.Module):
    """Multi-head self-attention with optional RMS qk-norm over each head and dropout."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN transformer block (LayerNorm eps 1e-6), no drop-path, no layer scale."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class JEPAProjection(nn.Module):
    """``u_theta``: Linear(D_dec -> 4 D_dec) - GELU - LayerNorm - Linear(-> D_enc)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.pred = nn.Sequential()
        self.pred.add_module("fc1", nn.Linear(in_dim, 4 * in_dim))
        self.pred.add_module("act", nn.GELU())
        self.pred.add_module("norm", nn.LayerNorm(4 * in_dim, eps=1e-6))
        self.pred.add_module("fc2", nn.Linear(4 * in_dim, out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.pred(z)


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Smooth L1 (``beta``) averaged over channels, then over the masked tokens (``mask`` [B, L])."""
    per = F.smooth_l1_loss(pred.float(), target.float(), beta=beta, reduction="none").mean(-1)
    m = mask.to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1)


class DJEPANet(nn.Module):
    """Everything D-JEPA trains, under the released state-dict names: ``class_emb``,
    ``fake_latent``, ``buffer``, ``z_proj``, ``z_proj_ln``, ``encoder_blocks``, ``encoder_norm``,
    ``encoder_pos_embed_learned``, ``decoder_embed``, ``mask_token``, ``decoder_blocks``,
    ``decoder_norm``, ``decoder_pos_embed_learned``, ``diffloss`` (``.head`` the denoiser) and
    ``jepaloss`` (absent when ``jepa_weight`` is 0, like the released ``jepaloss="none"``)."""

    def __init__(self, m: DJEPAModelConfig, num_tokens: int, token_dim: int, num_classes: int):
        super().__init__()
        self.seq_len, self.token_dim, self.buffer_size = num_tokens, token_dim, m.buffer_size
        self.num_classes, self.label_drop_prob = num_classes, m.label_drop_prob
        self.grad_checkpointing = m.grad_checkpointing
        D, Dd = m.embed_dim, m.decoder_embed_dim
        self.class_emb = nn.Embedding(num_classes, D)
        self.fake_latent = nn.Parameter(torch.zeros(1, D))
        self.buffer = nn.Parameter(torch.zeros(1, m.buffer_size, D))
        self.z_proj = nn.Linear(token_dim, D)
        self.z_proj_ln = nn.LayerNorm(D, eps=1e-6)
        self.encoder_blocks = nn.ModuleList(
            Block(D, m.num_heads, m.mlp_ratio, m.qk_norm, m.attn_dropout, m.proj_dropout) for _ in range(m.depth))
        self.encoder_norm = nn.LayerNorm(D, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, num_tokens, D))
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_blocks = nn.ModuleList(
            Block(Dd, m.decoder_num_heads, m.mlp_ratio, m.qk_norm, m.attn_dropout, m.proj_dropout)
            for _ in range(m.decoder_depth))
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, num_tokens, Dd))
        self._init_weights()
        self.diffloss: DiffusionLoss | FlowMatchingLoss
        # after the init above, as released: the denoiser and projection keep their own
        if m.head == "gauss":
            head = DenoisingMLP(token_dim, Dd, m.head_width, m.head_depth, out_dim=2 * token_dim,
                                grad_checkpointing=m.grad_checkpointing)
            self.diffloss = DiffusionLoss(head, train_steps=m.diffusion_steps, sample_steps=m.sample_steps,
                                          batch_mul=m.diffusion_batch_mul, learn_sigma=True,
                                          clip_denoised=m.clip_denoised)
        else:
            head = DenoisingMLP(token_dim, Dd, m.head_width, m.head_depth, grad_checkpointing=m.grad_checkpointing)
            self.diffloss = FlowMatchingLoss(head, sample_steps=m.sample_steps, batch_mul=m.diffusion_batch_mul,
                                             time_shift=m.flow_time_shift)
        self.jepaloss = JEPAProjection(Dd, D) if m.jepa_weight > 0 else None

    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        for p in (self.class_emb.weight, self.fake_latent, self.mask_token, self.encoder_pos_embed_learned,
                  self.decoder_pos_embed_learned):
            nn.init.normal_(p, std=0.02)

    def class_embedding(self, labels: torch.Tensor | None, drop: torch.Tensor | None = None, batch: int = 0):
        """The buffer's condition: the class embedding, the null one where ``drop`` (or for
        ``labels=None``: unconditional)."""
        if labels is None:
            return self.fake_latent.expand(batch, -1)
        emb = self.class_emb(labels)
        if drop is not None:
            emb = torch.where(drop[:, None], self.fake_latent.to(emb.dtype), emb)
        return emb

    def _blocks(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for blk in blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L, d]``, ``mask [B, L]`` (True: hidden; the same count in every row, or
        None), ``cond [B, D]`` -> ``[B, buffer + visible, D]``."""
        x = self.z_proj(tokens) + self.encoder_pos_embed_learned
        b, _, d = x.shape
        if mask is not None:  # every row hides the same number of tokens
            x = x[~mask].reshape(b, self.seq_len - int(mask[0].sum()), d)
        x = torch.cat([(self.buffer + cond[:, None]).to(x.dtype), x], dim=1)
        x = self._blocks(self.encoder_blocks, self.z_proj_ln(x))
        return self.encoder_norm(x)

    def decode(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Encoder output -> a feature per token ``[B, L, D_dec]``."""
        x = self.decoder_embed(x)
        b, _, d = x.shape
        if mask is not None:
            keep = torch.cat([mask.new_ones(b, self.buffer_size), ~mask], dim=1)  # buffer + visible
            full = self.mask_token.to(x.dtype).expand(b, self.buffer_size + self.seq_len, d)
            x = full.masked_scatter(keep[..., None], x)
        pos = F.pad(self.decoder_pos_embed_learned, (0, 0, self.buffer_size, 0)).to(x.dtype)
        x = self._blocks(self.decoder_blocks, x + pos)
        return self.decoder_norm(x)[:, self.buffer_size:]

    def features(self, tokens: torch.Tensor, mask: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(tokens, mask, cond), mask)


class DJEPA(JEPAMethod):
    """D-JEPA's training step over ``batch = {"images" or "latents", "labels", "mask"
    [B, L] bool, "drop_label" [B] bool}`` (:class:`DJEPAMaskSampler`). Trainer hooks: ``net``
    (everything) is trained; ``ema``, a full copy of it, is the target, updated by EMA; the
    evaluated encoder is the EMA encoder seen through the tokenizer with the null class
    (:class:`ProbeEncoder`)."""

    def __init__(self, cfg: DJEPAConfig, tokenizer: nn.Module | None = None):
        super().__init__()
        m = cfg.model
        self.side = grid_side(cfg)
        self.patch = cfg.tokenizer.patch_size
        self.channels = cfg.tokenizer.latent_channels if cfg.tokenizer.kind == "vae" else cfg.tokenizer.in_chans
        self.tokenizer_kind = cfg.tokenizer.kind
        self.sample_posterior = cfg.tokenizer.sample_posterior
        self.diffusion_weight, self.jepa_weight, self.jepa_beta = m.diffusion_weight, m.jepa_weight, m.jepa_beta
        self.net = DJEPANet(m, self.side**2, token_dim(cfg), cfg.data.num_classes)
        self.ema = EMATarget(self.net)
        self._tokenizer = (tokenizer,)  # outside the module tree: not in the state dict, not trained
        self._cfg = cfg

    # -- Trainer hooks -------------------------------------------------------------------------

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def target_modules(self) -> dict[str, nn.Module]:
        return {"ema": self.ema}

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        self.ema.update(self.net, momentum)

    def build_optimizer(self, optim_cfg, lr: float, device) -> torch.optim.Optimizer:
        """AdamW with the released no-decay set: biases, 1-D parameters and every parameter
        under ``diffloss``, ``jepaloss``, ``buffer``, ``class_emb``, ``fake_latent``, ``z_proj``,
        the position tables, ``decoder_embed`` and ``mask_token``."""
        from jepa_core.optim import adamw_kwargs

        decay: list[torch.Tensor] = []
        no_decay: list[torch.Tensor] = []
        for name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim == 1 or name.endswith(".bias") or any(s in name for s in NO_WEIGHT_DECAY)
            (no_decay if skip else decay).append(p)
        groups: list[dict[str, Any]] = [
            {"name": "net.decay", "params": decay},
            {"name": "net.no_decay", "params": no_decay, "WD_exclude": True, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=optim_cfg.betas,
                                 eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay, **adamw_kwargs(device))

    def eval_encoder(self) -> nn.Module:
        return ProbeEncoder(self, cast(DJEPANet, self.ema.module))

    # -- tokens ----------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> nn.Module:
        tok = self._tokenizer[0]
        if tok is None:
            tok = build_tokenizer(self._cfg)
            self._tokenizer = (tok,)
        return tok

    def tokenize(self, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Images in [-1, 1] -> tokens ``[B, L, d]``."""
        tok = self.tokenizer
        if isinstance(tok, VAETokenizer):
            tok.to(images.device)
        return patchify(tok.encode(images, sample=sample), self.patch)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> images in [-1, 1]."""
        latents = unpatchify(tokens.float(), self.patch, self.channels, self.side)
        tok = self.tokenizer
        if isinstance(tok, VAETokenizer):
            tok.to(tokens.device)
        return tok.decode(latents)

    def batch_tokens(self, batch: dict) -> torch.Tensor:
        if "latents" in batch:
            return patchify(batch["latents"].float(), self.patch)
        with torch.no_grad():
            return self.tokenize(batch["images"], sample=self.sample_posterior)

    # -- training step ---------------------------------------------------------------------------

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """One D-JEPA step (arXiv 2410.03755; djepa:models/djepa.py ``forward``, djepa:engine/djepa.py)."""
        tokens = self.batch_tokens(batch)
        labels, mask, drop = batch["labels"], batch["mask"], batch.get("drop_label")
        net = self.net
        z = net.features(tokens, mask, net.class_embedding(labels, drop))
        out: dict[str, torch.Tensor] = {"mask_ratio": mask.float().mean().detach()}
        loss = z.new_zeros((), dtype=torch.float32)
        if self.diffusion_weight > 0:
            ld = net.diffloss.loss(tokens[mask].float(), z[mask].float())
            out["diffusion_loss"] = ld.detach()
            loss = loss + self.diffusion_weight * ld
        if self.jepa_weight > 0:
            target = cast(DJEPANet, self.ema.module)
            target.eval()  # no dropout in the target (the released EMA model runs in eval mode)
            with torch.no_grad():  # the EMA encoder on every token, true label, buffer dropped
                h = target.encode(tokens, None, target.class_embedding(labels))[:, net.buffer_size:]
            assert net.jepaloss is not None  # built when model.jepa_weight > 0, as self.jepa_weight
            lp = jepa_loss(net.jepaloss(z), h, mask, self.jepa_beta)
            out["jepa_loss"] = lp.detach()
            loss = loss + self.jepa_weight * lp
        out["loss"] = loss
        return out

    # -- generation ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor | None,
        num: int | None = None,
        steps: int = 64,
        cfg: float = 1.0,
        temperature: float = 1.0,
        cfg_schedule: str = "linear",
        generator: torch.Generator | None = None,
        use_ema: bool = True,
        return_tokens: bool = False,
    ):
        """Images in [-1, 1] ``[B, C, H, W]`` for ``labels`` [B] (None: ``num`` unconditional
        samples), by the next-set-of-tokens loop of :func:`jepa_core.generative.generate_tokens`
        (``steps`` on the cosine schedule, linear CFG, ``temperature``), from the EMA copy."""
        if cfg < 1:
            raise ConfigError(f"cfg={cfg:g}: the guidance scale must be >= 1 (1: no guidance)")
        net = cast(DJEPANet, self.ema.module) if use_ema else self.net
        was_training = net.training
        net.eval()
        device = net.fake_latent.device
        if labels is not None:
            labels = labels.to(device)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= net.num_classes):
                raise ConfigError(f"class id {int(labels.max() if labels.max() >= net.num_classes else labels.min())} "
                                  f"is out of range: this model has classes 0 .. {net.num_classes - 1}")
            num = len(labels)
        if num is None:
            raise ValueError("give labels or num")
        cond = net.class_embedding(labels, batch=num)
        uncond = net.fake_latent.expand(num, -1) if cfg != 1.0 else None
        if steps > net.seq_len:
            raise ConfigError(f"steps={steps} exceeds the {net.seq_len} tokens of an image: every step reveals at "
                              f"least one token; use steps <= {net.seq_len}")

        def predict(tokens, known):
            mask = ~known
            if uncond is None:
                return net.features(tokens, mask, cond)
            z = net.features(torch.cat([tokens, tokens]), torch.cat([mask, mask]), torch.cat([cond, uncond]))
            return z[:num], z[num:]

        try:
            tokens = generate_tokens(
                predict, net.diffloss.sample, net.seq_len, net.token_dim, steps, num, temperature=temperature,
                cfg=cfg, cfg_schedule=cfg_schedule, generator=generator, device=device)
        finally:
            net.train(was_training)
        images = self.detokenize(tokens)
        return (images, tokens) if return_tokens else images


NO_WEIGHT_DECAY = ("diffloss", "jepaloss", "buffer", "class_emb", "fake_latent", "z_proj.",
                   "encoder_pos_embed_learned", "decoder_embed", "mask_token", "decoder_pos_embed_learned")


class ProbeEncoder(nn.Module):
    """``images [B, C, H, W] in [-1, 1] -> [B, L, D]``: the (EMA) encoder on every token with the
    null class (no label reaches the features), buffer dropped: what the probes see."""

    def __init__(self, method: DJEPA, net: DJEPANet):
        super().__init__()
        self.net = net
        self._method = (method,)
        self.embed_dim = net.encoder_norm.normalized_shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self._method[0].tokenize(images)
        x = self.net.encode(tokens, None, self.net.fake_latent.expand(len(tokens), -1))
        return x[:, self.net.buffer_size:]


def build_model(cfg: DJEPAConfig) -> DJEPA:
    # the VAE is loaded when first needed (not for training on cached latents)
    """The D-JEPA model of ``cfg``; a VAE tokenizer is loaded when first needed, not for training
    on cached latents."""
    return DJEPA(cfg, PixelTokenizer(cfg.tokenizer.in_chans) if cfg.tokenizer.kind == "pixels" else None)


# ---------------------------------------------------------------------------------------------
# data


class DJEPAMaskSampler:
    """:class:`jepa_core.masks.MaskSampler`: ``mask`` [B, L] (True: hidden), one ratio per
    global batch from the truncated normal on [``mask_ratio_min``, 1] and a random order per
    sample (``ceil(L r)`` masked each), and ``drop_label`` [B] with probability
    ``label_drop_prob``."""

    def __init__(self, num_tokens: int, mask_ratio_min: float = 0.7, label_drop_prob: float = 0.1):
        self.num_tokens, self.label_drop_prob = num_tokens, label_drop_prob
        self.ratio = mask_ratio_sampler(mask_ratio_min, 1.0)

    def __call__(self, batch_size: int, seeds: StepSeeds, inputs=None) -> dict:
        g = seeds.generator(DJEPA_MASK_TAG)
        k = self.ratio.num_masked(self.num_tokens, g)
        mask = mask_by_order(random_orders(batch_size, self.num_tokens, g), k)
        drop = torch.rand(batch_size, generator=seeds.generator(DJEPA_LABEL_TAG)) < self.label_drop_prob
        return {"mask": mask, "drop_label": drop}


class InMemoryBatch:
    """uint8 images ``[B, C, H, W]`` -> float in [-1, 1], each mirrored with probability 1/2
    (``hflip``), the flips drawn for the global batch (``slots`` of ``total``)."""

    def __init__(self, hflip: bool):
        self.hflip = hflip

    def __call__(self, images: torch.Tensor, g: torch.Generator, slots=None, total=None):
        x = images.float() / 127.5 - 1.0
        if self.hflip:
            n = len(x) if total is None else total
            flip = torch.rand(n, generator=g) < 0.5
            flip = flip if slots is None else flip[slots]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


def center_crop_arr(image, size: int):
    """ADM's centre crop: halve with a box filter while the short side is >= 2 ``size``, resize
    (bicubic) the short side to ``size``, take the centre square. PIL in, uint8 array out."""
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


class ADMTransform:
    """PIL image -> ADM centre crop, random horizontal flip (global RNG, seeded per sample by the
    Trainer), float ``[C, H, W]`` in [-1, 1]."""

    def __init__(self, size: int, hflip: bool):
        self.size, self.hflip = size, hflip

    def __call__(self, image) -> torch.Tensor:
        arr = center_crop_arr(image, self.size)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 127.5 - 1.0
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x


class CachedLatents(torch.utils.data.Dataset):
    """The ``.npz`` of :func:`cache_latents`: item i is the latent map of image i or of its
    mirror (probability 1/2 with ``hflip``), and its label."""

    def __init__(self, path: str | Path, hflip: bool = True):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"latent cache {str(path)!r} does not exist; write it with "
                                    "jepa_image.djepa.cache_latents, or set data.root")
        with np.load(path, allow_pickle=False) as z:
            self.latents = torch.from_numpy(z["latents"])
            self.flipped = torch.from_numpy(z["latents_flip"])
            self.labels = torch.from_numpy(z["labels"]).long()
        self.hflip = hflip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        use_flip = self.hflip and bool(torch.rand(()) < 0.5)
        return (self.flipped if use_flip else self.latents)[i].float(), self.labels[i]


@torch.no_grad()
def cache_latents(cfg: DJEPAConfig, out: str | Path, device: str = "cpu", batch_size: int = 64,
                  tokenizer: nn.Module | None = None) -> Path:
    """Encode the training images, and their mirrors, with the VAE once (``main_cache.py``'s
    job): writes ``latents``, ``latents_flip`` (float16, the posterior mean, standardised) and
    ``labels`` to ``out`` (.npz), to train with ``data.dataset=latents data.root=<out>``."""
    import dataclasses

    tok = tokenizer if tokenizer is not None else build_tokenizer(cfg)
    tok.to(device)
    data_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, hflip=False))
    dataset = _image_dataset(data_cfg, "train")
    lat, lat_f, labels = [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([_as_float_image(x) for x, _ in items]).to(device)
        lat.append(tok.encode(x).half().cpu())
        lat_f.append(tok.encode(x.flip(-1)).half().cpu())
        labels += [int(y) for _, y in items]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, latents=torch.cat(lat).numpy(), latents_flip=torch.cat(lat_f).numpy(),
             labels=np.asarray(labels, dtype=np.int64))
    return out


def _as_float_image(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x


def _in_memory(cfg: DJEPAConfig) -> bool:
    return cfg.data.dataset in ("fashion_mnist", "fashion_mnist_demo")


def _image_dataset(cfg: DJEPAConfig, split: str):
    d = cfg.data
    if d.dataset == "imagefolder":
        if not d.root:
            raise FileNotFoundError("data.dataset=imagefolder needs data.root (a folder with train/<class>/<image>)")
        return D.ImageFolder(d.root, "train" if split == "train" else "val", ADMTransform(d.image_size, d.hflip))
    if d.dataset == "latents":
        raise ConfigError("data.dataset=latents holds training latents only")
    images, labels = D.load_fashion_mnist(d.dataset, d.root, split)
    if d.image_size != images.shape[-1]:
        raise ConfigError(f"data.image_size={d.image_size}, but the Fashion-MNIST images are {images.shape[-1]} px; "
                          f"set data.image_size={images.shape[-1]}")
    return D.TensorImages(images, labels)


def train_collate(cfg: DJEPAConfig, rank: int = 0, world_size: int = 1) -> MaskCollator:
    sampler = DJEPAMaskSampler(grid_side(cfg) ** 2, cfg.model.mask_ratio_min, cfg.model.label_drop_prob)
    key = "latents" if cfg.data.dataset == "latents" else "images"
    transform = InMemoryBatch(cfg.data.hflip) if _in_memory(cfg) else None
    return MaskCollator(sampler, seed=cfg.train.seed, rank=rank, input_key=key, batch_transform=transform,
                        world_size=world_size, scope=cfg.train.draw_scope)


def build_train_data(cfg: DJEPAConfig, rank: int = 0, world_size: int = 1):
    if cfg.data.dataset == "latents":
        if not cfg.data.root:
            raise FileNotFoundError("data.dataset=latents needs data.root: the .npz written by cache_latents")
        dataset = CachedLatents(cfg.data.root, cfg.data.hflip)
    else:
        dataset = _image_dataset(cfg, "train")
    n_labels = int(dataset.labels.max()) + 1 if hasattr(dataset, "labels") else None
    if n_labels is not None and n_labels > cfg.data.num_classes:
        raise ConfigError(f"the training labels go up to {n_labels - 1} but data.num_classes={cfg.data.num_classes}; "
                          f"set data.num_classes={n_labels}")
    if isinstance(dataset, D.ImageFolder) and len(dataset.classes) > cfg.data.num_classes:
        raise ConfigError(f"{cfg.data.root} has {len(dataset.classes)} classes but data.num_classes="
                          f"{cfg.data.num_classes}; set data.num_classes={len(dataset.classes)}")
    return dataset, train_collate(cfg, rank, world_size)


class _FloatImages(torch.utils.data.Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return _as_float_image(x), y


def build_eval_data(cfg: DJEPAConfig):
    """Labelled train and held-out images in [-1, 1] (no flip): for the probes and the
    sample-quality classifier."""
    import dataclasses

    if cfg.data.dataset == "latents":
        return None
    plain = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, hflip=False))
    return _FloatImages(_image_dataset(plain, "train")), _FloatImages(_image_dataset(plain, "test"))


def class_names(cfg: DJEPAConfig) -> list[str] | None:
    if _in_memory(cfg):
        return list(D.FASHION_MNIST_CLASSES)
    if cfg.data.dataset == "imagefolder" and cfg.data.root:
        folder = Path(cfg.data.root) / "train"
        if folder.is_dir():
            return sorted(p.name for p in folder.iterdir() if p.is_dir())
    return None


# ---------------------------------------------------------------------------------------------
# `jepa sample`


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] ``[B, C, H, W]`` -> uint8 ``[B, H, W, C]``."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_grid(images: np.ndarray, path: str | Path, columns: int | None = None, pad: int = 2) -> Path:
    """uint8 ``[N, H, W, C]`` -> one PNG grid (white padding)."""
    from PIL import Image

    n, h, w, c = images.shape
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
    return path


def parse_classes(text: str | Sequence[int] | None, num_classes: int) -> list[int]:
    """``"0,3,5-7"`` / ``"all"`` / a list -> class ids, each checked against ``num_classes``."""
    if text is None or text == "all":
        return list(range(num_classes))
    if isinstance(text, str):
        ids: list[int] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
                    ids += list(range(int(a), int(b) + 1))
                else:
                    ids.append(int(part))
            except ValueError:
                raise ConfigError(f"--classes {text!r}: expected class ids like 0,3,5-7 or 'all'") from None
    else:
        ids = [int(c) for c in text]
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"class id {bad[0]} is out of range: this model has classes 0 .. {num_classes - 1}")
    if not ids:
        raise ConfigError("--classes is empty")
    return ids


@torch.no_grad()
def generate_per_class(model: DJEPA, classes: Sequence[int], num: int, *, steps: int, cfg: float,
                       temperature: float, cfg_schedule: str = "linear", seed: int = 0, batch_size: int = 64,
                       device: torch.device | str | None = None, progress: bool = False):
    """``num`` images of each class, in batches of ``batch_size``: uint8 ``[len(classes) * num, H,
    W, C]``, labels, and tokens. Batch i uses a generator seeded by (``seed``, i) on the
    device, so a call gives the same images whatever ran before it."""
    from jepa_core.masks import mix_seed

    device = torch.device(device) if device is not None else next(model.parameters()).device
    labels = torch.tensor([c for c in classes for _ in range(num)], dtype=torch.long)
    images, tokens = [], []
    starts = range(0, len(labels), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="sampling", leave=False)
    for i, start in enumerate(starts):
        g = torch.Generator(device=device).manual_seed(mix_seed(seed, i))
        x, t = model.generate(labels[start:start + batch_size], steps=steps, cfg=cfg, temperature=temperature,
                              cfg_schedule=cfg_schedule, generator=g, return_tokens=True)
        images.append(to_uint8(x))
        tokens.append(t.float().cpu().numpy())
    return np.concatenate(images), labels.numpy(), np.concatenate(tokens)


def sample_run(model: DJEPA, cfg: DJEPAConfig, *, out_dir: str | Path, classes=None, num: int = 64,
               cfg_scale: float | None = None, temperature: float | None = None, steps: int | None = None,
               seed: int = 0, batch_size: int | None = None, device: str | None = None,
               cfg_schedule: str | None = None) -> dict[str, Any]:
    """`jepa sample`: ``num`` images of each class, one PNG grid per class
    (``class_<id>.png``) and ``samples.npz`` (``images`` uint8 [N, H, W, C], ``labels``,
    ``tokens``) in ``out_dir``. Unset options come from the run's ``sample`` section."""
    from jepa_core.distributed import resolve_device

    s = cfg.sample
    cfg_scale = s.cfg if cfg_scale is None else cfg_scale
    if cfg_scale < 1:
        raise ConfigError(f"--cfg {cfg_scale:g}: the guidance scale must be >= 1 (1: no guidance)")
    if num < 1:
        raise ConfigError(f"--num {num}: give at least one image per class")
    ids = parse_classes(classes, cfg.data.num_classes)
    dev = resolve_device(device or cfg.train.device)
    if cfg.tokenizer.kind == "vae":
        model.tokenizer  # noqa: B018 -- load the VAE now: a missing extra fails before sampling
    model.to(dev).eval()
    steps = steps or s.steps
    images, labels, tokens = generate_per_class(
        model, ids, num, steps=steps, cfg=cfg_scale, temperature=s.temperature if temperature is None else temperature,
        cfg_schedule=cfg_schedule or s.cfg_schedule, seed=seed, batch_size=batch_size or s.batch_size, device=dev,
        progress=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = class_names(cfg)
    grids = []
    for c in ids:
        grids.append(str(save_grid(images[labels == c], out / f"class_{c}.png")))
    np.savez(out / "samples.npz", images=images, labels=labels, tokens=tokens)
    return {"out_dir": str(out), "grids": grids, "npz": str(out / "samples.npz"), "classes": ids,
            "class_names": [names[c] for c in ids] if names and len(names) >= cfg.data.num_classes else None,
            "num_per_class": num, "cfg": cfg_scale, "steps": steps, "seed": seed, "device": str(dev)}


def sample(run: dict, **options) -> dict[str, Any]:
    """The ``MethodSpec.sample`` hook: ``run`` is :func:`jepa_core.run.load_run`'s dict."""
    return sample_run(run["model"], run["cfg"], **options)


SPEC = MethodSpec(
    name="djepa",
    config_cls=DJEPAConfig,
    build_model=build_model,
    build_train_data=build_train_data,
    build_eval_data=build_eval_data,
    presets_package="jepa_image",
    default_preset="demo",
    description="D-JEPA: generative JEPA, denoising head per token + JEPA loss, next-set-of-tokens sampling "
                "(Chen et al. 2025)",
    evaluator="sample_quality",
    sample=sample,
    extra={"class_names": class_names},
)

__all__ = ["DJEPA", "DJEPAConfig", "DJEPAMaskSampler", "DJEPAModelConfig", "DJEPANet", "DJEPASampleConfig",
           "PixelTokenizer", "ProbeEncoder", "SampleEvalConfig", "TokenizerConfig", "VAETokenizer", "build_model",
           "build_tokenizer", "cache_latents", "generate_per_class", "jepa_loss", "parse_classes", "patchify",
           "sample_run", "save_grid", "unpatchify"]
