"""IWM, Image World Models (Garrido et al., 2024, arXiv 2403.00504): a JEPA whose predictor is
told the transformation between two views (the "action") and predicts the target view's
representation from the corrupted source view's.

No official code was released. What we follow, from the paper as summarised in detail by
secondary sources (each item also in the README, with what is not stated):

- Views (:mod:`jepa_image.iwm_views`): a shared crop and flip; the target gets colour jitter
  only; the source its own colour jitter, then grayscale, blur and solarisation; the action is
  the jitter difference (target minus source) and the source's destructive flags.
- Masks: the source is masked by the union of 4 rectangles of 15-20 % of the image each; the
  predictor predicts the target view's tokens at the masked positions (``model.targets=all``:
  every position).
- Predictor (:class:`ActionConditionedPredictor`): I-JEPA's, with the action entering as
  *feature conditioning* (concatenated to every mask token, then a 3-layer MLP; the paper's
  default), *sequence conditioning* (one token per action entry, each with its own projection)
  or not at all (the invariant baseline). Depth and width set invariant (12 x 384) or
  equivariant (18 x 384) behaviour.
- Loss: squared L2 to the EMA target encoder's tokens of the target view.

Not stated in the sources we could check, so taken from I-JEPA (ijepa:configs, ijepa:src/train.py):
the layer norm of the targets, the optimiser, learning-rate, weight-decay and EMA schedules, the
aspect ratio of the mask rectangles.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from jepa_core.config import BaseConfig, ConfigError, ranges
from jepa_core.losses import get_loss
from jepa_core.masks import MaskCollator, StepSeeds, apply_masks
from jepa_core.masks.blocks import block_masks
from jepa_core.method import JEPAMethod
from jepa_core.nn import VisionTransformer, VisionTransformerPredictor
from jepa_core.nn.interfaces import Masks
from jepa_core.nn.layers import trunc_normal_init_
from jepa_core.registry import MethodSpec
from jepa_core.target import EMATarget, normalize_targets
from torch import nn

from jepa_image import ijepa
from jepa_image import iwm_views as V
from jepa_image.ijepa import IJEPAModelConfig, ImageDataConfig

IWM_MASK_TAG = 0x69776D  # "iwm": the generator of a batch's union-of-blocks masks
REDRAWS = 20  # block positions drawn again at most this often when an image keeps too few tokens

# ---------------------------------------------------------------------------------------------
# config


@ranges(action_dim=">=1", condition_mlp_layers=">=1")
@dataclass
class IWMModelConfig(IJEPAModelConfig):
    loss: Literal["smooth_l1", "l2", "l1"] = "l2"  # the paper: squared L2
    conditioning: Literal["feature", "sequence", "none"] = "feature"
    """``feature``: the action concatenated to every mask token, then an MLP (the paper's default);
    ``sequence``: one token per action entry, each with its own projection; ``none``: the
    invariant baseline (the predictor is never told the action)."""
    condition_mlp_layers: int = 3  # feature conditioning's MLP (the paper: 3 layers)
    action_dim: int | None = None
    """None: the views' action (:data:`jepa_image.iwm_views.ACTION_DIM` entries). Set it only to
    check a custom pipeline's action against the predictor."""
    targets: Literal["masked", "all"] = "masked"
    """``masked``: the target view's tokens at the masked positions (the paper's pretraining
    loss); ``all``: every position."""

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.action_dim is not None and self.action_dim != V.ACTION_DIM:
            raise ConfigError(f"{prefix}.action_dim={self.action_dim} does not match the views' action, which has "
                              f"{V.ACTION_DIM} entries ({', '.join(V.ACTION_NAMES)}); set {prefix}.action_dim=null")


@ranges(num_blocks=">=1", block_scale="(0,1] ordered", aspect_ratio=">0 ordered", min_context=">=1")
@dataclass
class IWMMaskConfig:
    """The source's mask: the union of ``num_blocks`` rectangles of ``block_scale`` of the image
    each (the paper: 4 of 15-20 %); one rectangle size per global batch and the aspect ratio
    drawn as I-JEPA draws its target blocks (ijepa:src/masks/multiblock.py: the aspect ratio is
    not stated for IWM). The visible tokens of each image are truncated, at random, to the
    batch's minimum count (equal row lengths, as I-JEPA truncates its context)."""

    num_blocks: int = 4
    block_scale: tuple[float, float] = (0.15, 0.2)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    min_context: int = 4  # fewer visible tokens in an image: the batch's positions are drawn again


@ranges(mrr_candidates=">=2", mrr_images=">=1", mrr_batch_size=">=1", finetune_epochs=">=1", finetune_lr=">0",
        predictor_lr_scale=">0", finetune_weight_decay=">=0", finetune_batch_size=">=1")
@dataclass
class WorldModelEvalConfig:
    """Settings of the ``world_model`` evaluator (jepa-eval): the mean reciprocal rank of the
    true target among ``mrr_candidates`` transformed versions of an image (the paper: 256) and
    predictor fine-tuning (frozen EMA encoder, the pretrained predictor asked for the
    untransformed image with the null action, an attentive head; the predictor's LR is
    ``predictor_lr_scale`` times the head's, the paper's 1/10; 100 epochs in the paper)."""

    mrr: bool = True
    mrr_candidates: int = 256
    mrr_images: int = 1000
    mrr_batch_size: int = 16  # images per MRR batch (each with mrr_candidates target views)
    mrr_source: Literal["clean", "augmented"] = "clean"
    """``clean``: the source is the untransformed image, so the action is the candidate's jitter
    (one reading of the paper); ``augmented``: a source view drawn like in training."""
    predictor_finetune: bool = True
    random_predictor: bool = True  # also fine-tune a re-initialised predictor (the paper's control)
    finetune_epochs: int = 100
    finetune_lr: float = 1.0e-3
    predictor_lr_scale: float = 0.1
    finetune_weight_decay: float = 0.05
    finetune_batch_size: int = 256


@dataclass
class IWMConfig(BaseConfig):
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("model.*", "data.image_size")
    RESUME_SAFE_KEYS: ClassVar[tuple[str, ...]] = ("model.activation_checkpointing", "model.drop_path_rate",
                                                   "world_model_eval.*")

    method: str = "iwm"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: IWMModelConfig = field(default_factory=IWMModelConfig)
    views: V.IWMViewConfig = field(default_factory=V.IWMViewConfig)
    mask: IWMMaskConfig = field(default_factory=IWMMaskConfig)
    world_model_eval: WorldModelEvalConfig = field(default_factory=WorldModelEvalConfig)

    def check(self, prefix: str) -> None:
        """I-JEPA's check (whole patches), then: the masks fit the token grid."""
        ijepa.check_whole_patches(self.data.image_size, self.model.patch_size)
        grid = self.data.image_size // self.model.patch_size
        UnionBlockMaskSampler(self.mask, grid, grid)  # raises a ConfigError when the masks cannot fit


# ---------------------------------------------------------------------------------------------
# masks


class UnionBlockMaskSampler:
    """:class:`jepa_core.masks.MaskSampler` of IWM's source masks: ``masks_enc`` the tokens
    outside the union of ``num_blocks`` rectangles (the source's visible part), ``masks_pred``
    the rectangles' tokens, predicted together in one pass (``[B, K]`` each, one mask of each
    kind); see :meth:`masks`."""

    def __init__(self, cfg: IWMMaskConfig, grid_h: int, grid_w: int):
        self.cfg, self.H, self.W = cfg, grid_h, grid_w
        n = grid_h * grid_w
        largest = max(h * w for h, w in (self._size(r / 100) for r in range(101)))
        if n - largest < cfg.min_context:
            raise ConfigError(f"mask: one block of scale up to {cfg.block_scale[1]} leaves {n - largest} of the "
                              f"{grid_h}x{grid_w} tokens visible, fewer than mask.min_context={cfg.min_context}; "
                              "lower mask.block_scale, or use a smaller patch")

    def _size(self, r: float) -> tuple[int, int]:
        """Block height and width for the uniform draw ``r`` (I-JEPA's rule: scale and aspect
        ratio from the same ``r``, ``h = round(sqrt(k a))``, ``w = round(sqrt(k / a))``)."""
        c = self.cfg
        k = int(self.H * self.W * (c.block_scale[0] + r * (c.block_scale[1] - c.block_scale[0])))
        a = c.aspect_ratio[0] + r * (c.aspect_ratio[1] - c.aspect_ratio[0])
        h, w = round((k * a) ** 0.5), round((k / a) ** 0.5)
        return max(1, min(h, self.H)), max(1, min(w, self.W))

    def masks(self, batch_size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The index rows ``(context [B, Kc], masked [B, num_blocks * h * w])``: the visible
        tokens, truncated at random to the batch's minimum, and the blocks' tokens block after
        block (a token in two blocks appears twice: predicted twice from the same query, so it
        weighs twice in the loss, as in I-JEPA's overlapping target blocks; no truncation, since
        every block of a batch has the same size)."""
        h, w = self._size(torch.rand(1, generator=g).item())
        shape = (batch_size, self.cfg.num_blocks)
        for _ in range(REDRAWS):  # positions again (same generator) while an image keeps too few tokens
            top = torch.randint(0, self.H - h + 1, shape, generator=g)
            left = torch.randint(0, self.W - w + 1, shape, generator=g)
            blocks = block_masks(top, left, h, w, self.H, self.W)  # [B, num_blocks, N]
            if int((~blocks.any(dim=1)).sum(1).min()) >= self.cfg.min_context:
                break
        masked = blocks.nonzero()[:, 2].view(batch_size, -1)  # raster order within each block
        order = torch.rand(blocks.shape[::2], generator=g)  # random truncation order of the context
        return _truncate(~blocks.any(dim=1), order), masked

    def __call__(self, batch_size: int, seeds: StepSeeds, inputs=None) -> dict:
        ctx, tgt = self.masks(batch_size, seeds.generator(IWM_MASK_TAG))
        if ctx.shape[1] < self.cfg.min_context:
            raise ConfigError(f"mask: {REDRAWS} draws in a row left an image with {ctx.shape[1]} visible tokens "
                              f"(mask.min_context={self.cfg.min_context}); lower mask.block_scale or mask.num_blocks")
        return {"masks_enc": [ctx], "masks_pred": [tgt]}


def _truncate(keep: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The indices of ``keep [B, N]`` per row, a random subset of the batch's minimum count
    (the True entries with the smallest ``order``), raster-sorted."""
    k = int(keep.sum(1).min())
    score = torch.where(keep, order, torch.full_like(order, 2.0))
    return score.topk(k, dim=1, largest=False).indices.sort(dim=1).values


# ---------------------------------------------------------------------------------------------
# model


class ActionConditionedPredictor(VisionTransformerPredictor):
    """I-JEPA's predictor told the action (``forward(z, masks_ctx, masks_tgt, condition=action)``).

    - ``feature``: each query (mask token + position) is concatenated with the action and mapped
      back to the predictor width by an MLP of ``mlp_layers`` Linear layers with GELU between.
    - ``sequence``: the action becomes ``action_dim`` extra tokens after the context, entry i
      as ``a_i * W_i + b_i`` (its own projection, so the tokens are told apart).
    - ``none``: the action is ignored (I-JEPA's predictor, the invariant baseline).
    """

    def __init__(self, *args, conditioning: str = "feature", action_dim: int = V.ACTION_DIM, mlp_layers: int = 3,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if conditioning not in ("feature", "sequence", "none"):
            raise ConfigError(f"unknown conditioning {conditioning!r}; valid: feature, sequence, none")
        self.conditioning, self.action_dim = conditioning, action_dim
        d = self.predictor_embed_dim
        if conditioning == "feature":
            layers: list[nn.Module] = []
            for i in range(mlp_layers):
                layers += [nn.Linear(d + action_dim if i == 0 else d, d)] + ([nn.GELU()] if i < mlp_layers - 1 else [])
            self.condition_mlp = nn.Sequential(*layers)
            trunc_normal_init_(self.condition_mlp, 0.02)
        elif conditioning == "sequence":
            self.action_weight = nn.Parameter(torch.zeros(action_dim, d))
            self.action_bias = nn.Parameter(torch.zeros(action_dim, d))
            nn.init.trunc_normal_(self.action_weight, std=0.02, a=-2.0, b=2.0)
            nn.init.trunc_normal_(self.action_bias, std=0.02, a=-2.0, b=2.0)

    def _check(self, condition: torch.Tensor) -> None:
        if condition.shape[-1] != self.action_dim:
            raise ValueError(f"the action has {condition.shape[-1]} entries but the predictor was built for "
                             f"{self.action_dim} ({', '.join(V.ACTION_NAMES)} by default); build the predictor "
                             "with the views' action size, or fix the views")

    def make_queries(self, ids_tgt, mask_index: int = 0, condition=None):
        queries = self.query_token(mask_index) + self.predictor_pos_embed[0][ids_tgt]
        if condition is None or self.conditioning != "feature":
            return queries
        self._check(condition)
        a = condition.to(queries.dtype)[:, None, :].expand(-1, queries.shape[1], -1)
        return self.condition_mlp(torch.cat([queries, a], dim=-1))

    def condition_tokens(self, condition):
        if self.conditioning != "sequence":
            return None
        self._check(condition)
        return condition[:, :, None] * self.action_weight + self.action_bias  # [R, A, d]

    def forward(self, z: torch.Tensor, masks_ctx: Masks, masks_tgt: Masks, mask_index: int = 0,
                condition: torch.Tensor | None = None, valid_ctx: Masks = None,
                valid_tgt: Masks = None) -> torch.Tensor:
        if self.conditioning == "none":
            condition = None  # invariant: never sees the action
        elif condition is None:
            raise ValueError(f"this predictor is conditioned ({self.conditioning}) and needs the action: "
                             "predictor(z, masks_ctx, masks_tgt, condition=action)")
        return super().forward(z, masks_ctx, masks_tgt, mask_index, condition, valid_ctx, valid_tgt)


class IWM(JEPAMethod):
    """IWM's training step over ``batch = {"images" (the source x), "target_images" (y), "action",
    "masks_enc", "masks_pred"}`` (:class:`jepa_image.iwm_views.PairedViews` and
    :class:`UnionBlockMaskSampler`). Trainer hooks: JEPAMethod's defaults (``encoder`` and
    ``predictor`` trained, ``target_encoder`` their EMA twin and the encoder evaluated)."""

    encoder: VisionTransformer
    predictor: ActionConditionedPredictor

    def __init__(self, encoder: VisionTransformer, predictor: ActionConditionedPredictor, loss: str = "l2",
                 targets: str = "masked"):
        super().__init__()
        self.encoder, self.predictor = encoder, predictor
        self.target_encoder = EMATarget(encoder)
        self.loss_fn = get_loss(loss)
        self.predict_all = targets == "all"

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """One IWM step (arXiv 2403.00504, method section): encode the visible part of the source,
        predict the target view's representation given the action, regress the EMA encoder's."""
        source, target, action = batch["images"], batch["target_images"], batch["action"]
        masks_enc, masks_pred = batch["masks_enc"], self.prediction_masks(batch)
        # Targets: the EMA encoder on the whole target view, layer-normed, at the predicted positions.
        with torch.no_grad():
            h = apply_masks(normalize_targets(self.target_encoder(target)), masks_pred)
        # Source: the encoder sees the visible tokens of x; the predictor, told the action, fills in y.
        z = self.encoder(source, masks_enc)
        z = self.predictor(z, masks_enc, masks_pred, condition=action)
        return {"loss": self.loss_fn(z, h), "context_tokens": masks_enc[0].shape[1],
                "target_tokens": masks_pred[0].shape[1]}

    def prediction_masks(self, batch: dict) -> list[torch.Tensor]:
        if not self.predict_all:
            return batch["masks_pred"]
        b, n = batch["images"].shape[0], self.encoder.num_patches
        return [torch.arange(n, device=batch["images"].device).expand(b, -1)]


def build_predictor(m: IWMModelConfig, encoder: VisionTransformer) -> ActionConditionedPredictor:
    """IWM's action-conditioned predictor on the encoder's token grid (``model.conditioning``:
    feature or sequence)."""
    return ActionConditionedPredictor(
        num_patches=encoder.num_patches, embed_dim=encoder.embed_dim, predictor_embed_dim=m.pred_emb_dim,
        depth=m.pred_depth, num_heads=m.pred_num_heads or encoder.num_heads, mlp_ratio=m.pred_mlp_ratio or 4.0,
        drop_path_rate=m.drop_path_rate, pos_embed_order=m.pos_embed_order,
        conditioning=m.conditioning, action_dim=m.action_dim or V.ACTION_DIM, mlp_layers=m.condition_mlp_layers,
    )


def build_model(cfg: IWMConfig) -> IWM:
    """The IWM model of ``cfg``: I-JEPA's encoder, the action-conditioned predictor, the EMA target
    and the loss."""
    if cfg.model.activation_checkpointing:
        raise ConfigError("model.activation_checkpointing is not supported by iwm yet; set it to false")
    encoder = ijepa.build_encoder(cfg.model, cfg.data.image_size)
    return IWM(encoder, build_predictor(cfg.model, encoder), cfg.model.loss, cfg.model.targets)


# ---------------------------------------------------------------------------------------------
# data


def _in_memory(cfg: IWMConfig) -> bool:
    return cfg.data.dataset in ("fashion_mnist", "fashion_mnist_demo")


def train_collate(cfg: IWMConfig, rank: int = 0, world_size: int = 1) -> MaskCollator:
    """Paired views (in-memory data: the shared crop and flip too) and the source masks, drawn
    for the global batch from (seed, step) like I-JEPA's masks and crops."""
    d, grid = cfg.data, cfg.data.image_size // cfg.model.patch_size
    views = V.PairedViews(cfg.views, d.image_size, d.mean, d.std, crop=_in_memory(cfg))
    return MaskCollator(UnionBlockMaskSampler(cfg.mask, grid, grid), seed=cfg.train.seed, rank=rank,
                        batch_transform=views, world_size=world_size, scope=cfg.train.draw_scope)


def build_train_data(cfg: IWMConfig, rank: int = 0, world_size: int = 1):
    d = cfg.data
    tf = None if _in_memory(cfg) else V.pair_transform(d.image_size, cfg.views.crop_scale, cfg.views.hflip_p)
    return ijepa._raw_dataset(cfg, "train", tf), train_collate(cfg, rank, world_size)


# ---------------------------------------------------------------------------------------------
# the world model, for jepa-eval's ``world_model`` evaluator


class IWMWorldModel:
    """The :class:`jepa_eval.world_model.WorldModel` of a trained :class:`IWM`: frozen EMA
    encoder tokens, the predictor for fine-tuning (asked for every position of the
    untransformed image: the null action), and the predictions and candidate targets for MRR."""

    def __init__(self, model: IWM, cfg: IWMConfig):
        self.model, self.cfg = model, cfg
        grid = cfg.data.image_size // cfg.model.patch_size
        self.sampler = UnionBlockMaskSampler(cfg.mask, grid, grid)
        self.mean = torch.tensor(cfg.data.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.data.std).view(1, -1, 1, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.target_encoder(images)

    def finetune_predictor(self, pretrained: bool = True) -> nn.Module:
        predictor = copy.deepcopy(self.model.predictor)
        if not pretrained:
            torch.manual_seed(self.cfg.train.seed + 2)
            predictor = build_predictor(self.cfg.model, self.model.encoder).to(next(predictor.parameters()).device)
        return NullActionPredictor(predictor)

    @torch.no_grad()
    def world_model_batch(self, images: torch.Tensor, n_candidates: int, generator: torch.Generator):
        """For each image: one source mask, ``n_candidates`` target-view parameter draws (colour
        jitter as target views are made, always applied so that the candidates differ), the
        predicted and the actual target tokens at the masked positions, flattened:
        ``([B, N, K * D], [B, N, K * D])``. The source is the clean image, or with
        ``world_model_eval.mrr_source=augmented`` a source view drawn as in training."""
        m, views, b, n = self.model, self.cfg.views, images.shape[0], n_candidates
        dev = images.device
        clean = (images * self.std.to(dev) + self.mean.to(dev)).clamp(0, 1)
        ctx, tgt = self.sampler.masks(b, generator)
        ctx, tgt = ctx.to(dev), tgt.to(dev)
        # every candidate jittered (p = 1): un-jittered draws would be identical images, i.e. ties
        jittered = dataclasses.replace(views, jitter_p=1.0)
        params_t = V.sample_view_params(jittered, b * n, generator, source=False).to(dev)
        if self.cfg.world_model_eval.mrr_source == "augmented":
            params_s = V.sample_view_params(views, b, generator, source=True).to(dev)
        else:
            params_s = torch.tensor(V.IDENTITY_PARAMS).repeat(b, 1).to(dev)
        source = V.apply_view(clean, params_s, views)
        targets = V.apply_view(clean.repeat_interleave(n, 0), params_t, views)
        norm = lambda x: (x - self.mean.to(dev)) / self.std.to(dev)  # noqa: E731
        tgt_n = tgt.repeat_interleave(n, 0)
        cand = apply_masks(normalize_targets(m.target_encoder(norm(targets))), [tgt_n])
        z = m.encoder(norm(source), [ctx]).repeat_interleave(n, 0)
        action = V.action_vector(params_s.repeat_interleave(n, 0), params_t, views.source)
        pred = m.predictor(z, [ctx.repeat_interleave(n, 0)], [tgt_n], condition=action)
        return pred.reshape(b, n, -1), cand.reshape(b, n, -1)


class NullActionPredictor(nn.Module):
    """``tokens [B, N, D] -> [B, N, D]``: the predictor over every token, asked for every position
    of the untransformed image (the null action)."""

    def __init__(self, predictor: ActionConditionedPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n = tokens.shape[:2]
        every = torch.arange(n, device=tokens.device).expand(b, -1)
        action = V.null_action(b).to(tokens.device, tokens.dtype)
        return self.predictor(tokens, [every], [every], condition=action)


def world_model(model: IWM, cfg: IWMConfig) -> IWMWorldModel:
    return IWMWorldModel(model, cfg)


SPEC = MethodSpec(
    name="iwm",
    config_cls=IWMConfig,
    build_model=build_model,
    build_train_data=build_train_data,
    build_eval_data=ijepa.build_eval_data,
    presets_package="jepa_image",
    default_preset="demo",
    description="IWM: image world model, action-conditioned predictor over photometric views (Garrido et al. 2024)",
    evaluator="world_model",
    extra={"world_model": world_model},
)

__all__ = ["IWM", "ActionConditionedPredictor", "IWMConfig", "IWMMaskConfig", "IWMModelConfig", "IWMWorldModel",
           "NullActionPredictor", "UnionBlockMaskSampler", "WorldModelEvalConfig", "build_model", "build_predictor"]
