"""Attentive probes on frozen token features: the V-JEPA probe and the V-JEPA 2 probe (v2),
and a grid of probes trained in parallel over learning rate x weight decay.

Written from the official probes and the evaluations that train them
(jepa:src/models/attentive_pooler.py, jepa:evals/video_classification_frozen/eval.py;
vjepa2:src/models/attentive_pooler.py, vjepa2:evals/video_classification_frozen/eval.py);
parameter names follow the official probe checkpoints so that they load without renaming:

* V-JEPA (jepa:src/models/attentive_pooler.py, probe files ``jepa/*/*-probe.pth.tar``, key
  ``classifier``): ``pooler.query_tokens [1, 1, D]``,
  ``pooler.cross_attention_block.{norm1, xattn.q, xattn.kv, xattn.proj, norm2, mlp.fc1, mlp.fc2}``,
  ``linear``. ``xattn.proj`` exists but is never applied.
* V-JEPA 2 (vjepa2:src/models/attentive_pooler.py, probe files ``vjepa2/evals/*.pt``, key
  ``classifiers``, one state dict per probe): ``pooler.query_tokens``,
  ``pooler.blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` for the
  ``depth - 1`` self-attention blocks (3 with the released 4 probe blocks),
  ``pooler.cross_attention_block.{norm1, xattn.q, xattn.kv, norm2, mlp.fc1, mlp.fc2}`` (no
  ``xattn.proj``), ``linear``.

The official checkpoints carry a DDP ``module.`` prefix; :func:`strip_ddp_prefix` removes it.

LayerNorm eps: both official probes build their norms with ``nn.LayerNorm``'s default eps 1e-5
(the pooler's ``norm_layer`` default, not overridden by the evals), unlike the encoders (1e-6);
``norm_eps`` defaults to 1e-5 accordingly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
import torch.nn.functional as F
from jepa_core.nn.vit import Block, Mlp, trunc_normal_init_
from jepa_core.schedules import WarmupCosine
from torch import nn
from torch.utils.data import Dataset

Form = Literal["vjepa", "vjepa2"]

# V-JEPA 2 probe grid (vjepa2:configs/eval/*, evals/video_classification_frozen/eval.py): 5 learning rates x 4 weight decays.
DEFAULT_LRS: tuple[float, ...] = (5e-3, 3e-3, 1e-3, 3e-4, 1e-4)
DEFAULT_WDS: tuple[float, ...] = (0.01, 0.1, 0.4, 0.8)
# Probe blocks per form: V-JEPA depth 1 (jepa:evals/*), V-JEPA 2 ``num_probe_blocks: 4``.
DEFAULT_DEPTH: dict[str, int] = {"vjepa": 1, "vjepa2": 4}
DEFAULT_FORM: Form = "vjepa2"  # eval.attentive_form unset: the newer probe (V-JEPA 2), as before


class CrossAttention(nn.Module):
    """Multi-head cross-attention of queries ``q [B, n, D]`` over tokens ``x [B, N, D]``.

    ``q`` is Linear(D->D), ``kv`` Linear(D->2D) with the K rows first, then V (heads
    contiguous inside each), softmax(QK^T / sqrt(d_head)) V through SDPA. The output is the
    concatenation of the heads with **no output projection**: the V-JEPA form defines
    ``proj`` Linear(D->D) but never applies it (jepa:src/models/utils/modules.py;
    kept as a parameter so that official checkpoints load strictly); the V-JEPA 2 form has no
    ``proj`` at all (vjepa2:src/models/utils/modules.py). ``use_proj`` only
    decides whether that unused parameter exists.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_proj: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if use_proj:
            self.proj = nn.Linear(dim, dim)  # present in V-JEPA checkpoints, unused in forward

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        B, n, C = q.shape
        N = x.shape[1]
        h = self.num_heads
        q = self.q(q).reshape(B, n, h, C // h).transpose(1, 2)
        k, v = self.kv(x).reshape(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(B, n, C)


class CrossAttentionBlock(nn.Module):
    """``q <- q + xattn(q, norm1(x))``, then ``q <- q + mlp(norm2(q))``.

    Only the tokens are normalised before the attention, not the queries (jepa:src/models/utils/modules.py ``CrossAttentionBlock``).
    ``mlp`` is the GELU MLP of the encoder blocks (``fc1``, ``act``, ``fc2``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_proj: bool = True,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, use_proj)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentivePooler(nn.Module):
    """Learned queries that cross-attend to the tokens: ``[B, N, D] -> [B, num_queries, D]``.

    * ``form="vjepa"`` (jepa:src/models/attentive_pooler.py): one ``CrossAttentionBlock``
      (with the unused ``xattn.proj``). Only ``depth=1`` is supported: the official constructor
      cannot build deeper poolers (its block rescale loop fails), so no checkpoint has them.
      Init rescale: the cross block's ``xattn.proj`` and ``mlp.fc2`` weights / sqrt(2).
    * ``form="vjepa2"`` (vjepa2:src/models/attentive_pooler.py): ``depth - 1``
      self-attention ``Block`` s (``blocks``) run over the *token sequence* first, then one
      ``CrossAttentionBlock`` without ``proj``. Init rescale: block i (0-based) gets
      ``attn.proj`` and ``mlp.fc2`` / sqrt(2 (i + 1)); the cross block's ``mlp.fc2`` /
      sqrt(2 max(depth - 1, 1)) (sqrt(6) for the released depth 4).

    Init (both): trunc_normal(std 0.02) on every Linear and on ``query_tokens``, zero biases,
    LayerNorm 1/0, then the rescale above.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_queries: int = 1,
        depth: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        form: Form = "vjepa",
        init_std: float = 0.02,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if form not in ("vjepa", "vjepa2"):
            raise ValueError(f"form must be 'vjepa' or 'vjepa2', got {form!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if form == "vjepa" and depth != 1:
            raise ValueError(
                "the V-JEPA pooler has depth 1 (extra query blocks cannot be built by the official code); "
                "use form='vjepa2' for deeper probes"
            )
        self.form = form
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, embed_dim))
        self.cross_attention_block = CrossAttentionBlock(
            embed_dim, num_heads, mlp_ratio, qkv_bias, use_proj=form == "vjepa", norm_eps=norm_eps
        )
        self.blocks: nn.ModuleList | None = None
        if form == "vjepa2" and depth > 1:
            self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth - 1))
            for blk in self.blocks:  # jepa_core's Block uses the encoders' 1e-6
                blk.norm1.eps = blk.norm2.eps = norm_eps
        trunc_normal_init_(self, init_std)
        nn.init.trunc_normal_(self.query_tokens, std=init_std, a=-2.0, b=2.0)
        self._rescale()

    @torch.no_grad()
    def _rescale(self) -> None:
        cab = self.cross_attention_block
        if self.form == "vjepa":
            cab.xattn.proj.weight.div_(math.sqrt(2.0))
            cab.mlp.fc2.weight.div_(math.sqrt(2.0))
            return
        last = 0
        for i, blk in enumerate(self.blocks or []):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))
            last = i
        cab.mlp.fc2.weight.div_(math.sqrt(2.0 * (last + 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blocks is not None:
            for blk in self.blocks:
                x = blk(x)
        q = self.query_tokens.expand(x.shape[0], -1, -1)
        return self.cross_attention_block(q, x)


class AttentiveClassifier(nn.Module):
    """``pooler`` (one query) + ``linear`` Linear(D -> num_classes): tokens ``[B, N, D]`` ->
    logits ``[B, num_classes]``.

    ``depth`` defaults to the official probes: 1 for ``form="vjepa"`` (jepa:evals/*), 4 for
    ``form="vjepa2"`` (``num_probe_blocks: 4``, vjepa2:configs/eval/*). ``num_heads`` is the
    encoder's head count in both evals (16 for ViT-L/H/g).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_classes: int,
        depth: int | None = None,
        form: Form = "vjepa",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_std: float = 0.02,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if form not in DEFAULT_DEPTH:
            raise ValueError(f"form must be 'vjepa' or 'vjepa2', got {form!r}")
        depth = DEFAULT_DEPTH[form] if depth is None else depth
        self.pooler = AttentivePooler(
            embed_dim, num_heads, 1, depth, mlp_ratio, qkv_bias, form, init_std, norm_eps
        )
        self.linear = nn.Linear(embed_dim, num_classes, bias=True)
        # The official classifier Linear is initialised by nn.Linear's default (it is built
        # outside the pooler's init); so is this one.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pooler(x).squeeze(1))


def strip_ddp_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove the DDP ``module.`` prefix of the official probe checkpoints (``save_checkpoint`` in
    jepa:evals/video_classification_frozen/eval.py and vjepa2:evals/video_classification_frozen/eval.py)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


# ------------------------------------------------------------------------------------------------
# Frozen token features


@torch.no_grad()
def extract_tokens(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
    dtype: torch.dtype = torch.float32,
    corrupt=None,
    return_indices: bool = False,
) -> tuple[torch.Tensor, ...]:
    """All output tokens ``[N, T, D]`` of a frozen encoder (run once, in eval mode), on CPU in
    ``dtype`` (float16 halves the memory of a large token cache), with the labels ``[N]``.

    Samples whose dataset raises :class:`jepa_core.data.CorruptSampleError` are skipped and
    recorded in ``corrupt`` (a :class:`jepa_eval.features.CorruptSamples`, shared by the
    encoders of a table; its size replaces ``max_samples``). ``return_indices``: also return
    the dataset index of each row."""
    from jepa_eval.features import iterate_samples

    was_training = encoder.training
    encoder.eval()
    toks, labels, indices = [], [], []
    try:
        for (x, y), idx in iterate_samples(dataset, batch_size, corrupt, max_samples):
            out = encoder(x.to(device))
            if out.ndim != 3:
                raise ValueError(f"the encoder must return tokens [B, N, D], got {tuple(out.shape)}")
            toks.append(out.to("cpu", dtype))
            labels.append(torch.as_tensor(y).cpu())
            indices.append(idx)
    finally:
        encoder.train(was_training)
    if not toks:
        raise ValueError("no samples to extract tokens from (the dataset is empty or every sample is corrupt)")
    res = (torch.cat(toks), torch.cat(labels).long())
    return (*res, torch.cat(indices)) if return_indices else res


# ------------------------------------------------------------------------------------------------
# A grid of probes trained in parallel


@dataclass
class AttentiveProbeResult:
    val_grid: dict[tuple[float, float], float]  # (lr, wd) -> validation accuracy, %
    best: tuple[float, float]  # (lr, wd) of the probe with the best validation accuracy
    val_accuracy: float  # its validation accuracy, %
    test_accuracy: float | None  # its test accuracy, % (None without test tokens)
    # Test accuracy of every probe, for reference only: V-JEPA 2 reports the max over the grid
    # on the evaluation set (vjepa2:evals/video_classification_frozen/eval.py ``run_one_epoch``),
    # an optimistic number; it is never used to select.
    test_grid: dict[tuple[float, float], float] | None
    train_loss: dict[tuple[float, float], float]  # mean cross-entropy over the last epoch
    classifier: AttentiveClassifier  # the selected probe, on CPU, in eval mode
    steps: int
    seconds: float
    config: dict = field(default_factory=dict)


@torch.no_grad()
def _accuracies(probes: nn.ModuleList, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int, device) -> list[float]:
    probes.eval()
    correct = torch.zeros(len(probes), dtype=torch.long)
    for i in range(0, len(tokens), batch_size):
        x = tokens[i : i + batch_size].to(device, torch.float32)
        y = labels[i : i + batch_size].to(device)
        for j, p in enumerate(probes):
            correct[j] += int((p(x).argmax(1) == y).sum())
    return [100.0 * int(c) / max(len(labels), 1) for c in correct]


def train_attentive_probes(
    tokens_train: torch.Tensor,
    y_train: torch.Tensor,
    tokens_val: torch.Tensor,
    y_val: torch.Tensor,
    lrs: Sequence[float] = DEFAULT_LRS,
    wds: Sequence[float] = DEFAULT_WDS,
    *,
    tokens_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    num_classes: int | None = None,
    num_heads: int = 16,
    depth: int | None = None,
    form: Form = "vjepa2",
    epochs: int = 20,
    batch_size: int = 64,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    seed: int = 0,
    device: torch.device | str = "cpu",
    eval_batch_size: int = 256,
) -> AttentiveProbeResult:
    """Train one attentive probe per (lr, wd) of the grid, all on the same batches, and select
    the one with the best validation accuracy; score it (once) on the test tokens if given.

    Protocol (V-JEPA 2, vjepa2:evals/video_classification_frozen/eval.py): every
    probe has its own AdamW over all its parameters (no no-decay group), LR = its grid value
    from the first step (no warm-up) with a per-step cosine to 0 (jepa_core.schedules
    ``WarmupCosine``), constant weight decay, cross-entropy, no gradient clipping. Defaults:
    the official 5 x 4 grid, 20 epochs, ``form="vjepa2"`` with 4 probe blocks and 16 heads.
    Differences: fp32 instead of fp16 autocast + GradScaler; the official number is the max
    over the grid on the evaluation set, here the probe is chosen on ``tokens_val``.

    Parallel: one step draws one batch and runs every probe on it (a loop over a ModuleList);
    the summed loss gives each probe exactly its own gradient (the probes share no parameter
    and the tokens are frozen), so a single backward serves all. The tokens ``[N, T, D]`` are
    precomputed (see :func:`extract_tokens`): the encoder runs once, not once per probe/epoch.

    Deterministic for a given ``seed``: probe inits and batch order come from seeded
    generators, and the global RNG state is restored afterwards.
    """
    t0 = time.perf_counter()
    if tokens_train.ndim != 3:
        raise ValueError(f"tokens_train must be [N, T, D], got {tuple(tokens_train.shape)}")
    if (tokens_test is None) != (y_test is None):
        raise ValueError("give both tokens_test and y_test, or neither")
    grid = [(float(lr), float(wd)) for lr in lrs for wd in wds]
    if not grid:
        raise ValueError("empty lr x wd grid")
    labels = [y_train, y_val] + ([y_test] if y_test is not None else [])
    if num_classes is None:
        num_classes = int(max(int(y.max()) for y in labels if len(y))) + 1
    device = torch.device(device)
    D = tokens_train.shape[-1]
    n = len(tokens_train)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probes = nn.ModuleList(
            AttentiveClassifier(D, num_heads, num_classes, depth, form) for _ in grid
        ).to(device)
    optimizers = [
        torch.optim.AdamW(p.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=wd)
        for p, (lr, wd) in zip(probes, grid)
    ]
    schedules = [WarmupCosine(lr, lr, 0.0, 0, total) for lr, _ in grid]
    gen = torch.Generator().manual_seed(seed)
    y_train = y_train.long()
    loss_sums = torch.zeros(len(grid))
    last_epoch_loss = torch.full((len(grid),), float("nan"))
    step = 0
    for _ in range(epochs):
        probes.train()
        loss_sums.zero_()
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x = tokens_train[idx].to(device, torch.float32)
            y = y_train[idx].to(device)
            losses = []
            for probe, opt, sched in zip(probes, optimizers, schedules):
                for g in opt.param_groups:
                    g["lr"] = sched.value(step)
                losses.append(F.cross_entropy(probe(x), y))
            total_loss = torch.stack(losses).sum()
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            total_loss.backward()
            for opt in optimizers:
                opt.step()
            loss_sums += torch.stack(losses).detach().float().cpu()
            step += 1
        last_epoch_loss = loss_sums / steps_per_epoch

    val = _accuracies(probes, tokens_val, y_val.long(), eval_batch_size, device)
    best_i = max(range(len(grid)), key=lambda i: (val[i], -i))  # ties: the earlier grid point
    test = None
    if tokens_test is not None:
        test = _accuracies(probes, tokens_test, y_test.long(), eval_batch_size, device)
    best_probe = cast(AttentiveClassifier, probes[best_i]).cpu().eval()  # ModuleList indexes as Module
    return AttentiveProbeResult(
        val_grid=dict(zip(grid, val)),
        best=grid[best_i],
        val_accuracy=val[best_i],
        test_accuracy=None if test is None else test[best_i],
        test_grid=None if test is None else dict(zip(grid, test)),
        train_loss={g: float(v) for g, v in zip(grid, last_epoch_loss)},
        classifier=best_probe,
        steps=step,
        seconds=round(time.perf_counter() - t0, 2),
        config={"form": form, "depth": depth if depth is not None else DEFAULT_DEPTH[form], "num_heads": num_heads,
                "epochs": epochs, "batch_size": batch_size, "seed": seed, "num_classes": num_classes},
    )
