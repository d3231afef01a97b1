"""MC-JEPA losses: flow-as-latent feature regression, photometric, smoothness, cycle
consistency, variance-covariance regularisation and VICReg.

MC-JEPA paper (arXiv 2307.12698). There is no official code; where a detail is "not stated"
it is not stated in the sources we could check, and the choice here is ours (documented per
function). Flows follow :mod:`jepa_video.flow_ops`: ``[B, 2, H, W]`` in pixels of their level,
``flow_{t->t+1}`` and backward warping, so ``warp(X_{t+1}, flow_{t->t+1}) ~ X_t``.
Every function returns a scalar tensor (``vicreg``: the scalar and its parts; and
``variance_covariance``: two scalars). The weights between the loss terms are the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .flow_ops import image_gradients, warp

__all__ = [
    "cycle_consistency",
    "feature_regression",
    "photometric",
    "smoothness",
    "ssim_loss_map",
    "variance_covariance",
    "vicreg",
]


def _masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``err [B, C, H, W]`` over the entries where ``mask [B, 1, H, W]`` is set (weighted)."""
    if mask is None:
        return err.mean()
    mask = mask.expand_as(err)
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def _combine(valid: torch.Tensor, mask: torch.Tensor | None, use_valid: bool) -> torch.Tensor | None:
    m = valid if use_valid else None
    if mask is not None:
        m = mask if m is None else m * mask
    return m


def feature_regression(
    feats_t: Sequence[torch.Tensor],
    feats_t1: Sequence[torch.Tensor],
    flows: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None] | None = None,
    use_valid_mask: bool = True,
) -> torch.Tensor:
    """Sum over levels of ``mean ||X_t - warp(X_{t+1}, flow_{t->t+1})||^2`` (the paper's Eq. 2).

    feats_t / feats_t1 / flows: per level ``[B, C_l, H_l, W_l]`` / same / ``[B, 2, H_l, W_l]``.
    The squared error is averaged over channels and positions (the paper's normalisation is
    not stated). ``masks`` (per level ``[B, 1, H_l, W_l]`` or None, e.g. a visibility mask from
    :func:`~jepa_video.flow_ops.forward_backward_occlusion`) and, with ``use_valid_mask``, the
    warp's validity mask restrict the mean (masking is not stated). No stop-gradient is applied.
    """
    total = feats_t[0].new_zeros(())
    for i, (x_t, x_t1, flow) in enumerate(zip(feats_t, feats_t1, flows, strict=True)):
        pred, valid = warp(x_t1, flow, return_mask=True)
        m = _combine(valid, None if masks is None else masks[i], use_valid_mask)
        total = total + _masked_mean((x_t - pred).pow(2), m)
    return total


def ssim_loss_map(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01**2, c2: float = 0.03**2) -> torch.Tensor:
    """Per-pixel ``(1 - SSIM(x, y)) / 2`` in ``[0, 1]``, ``[B, C, H, W]``.

    Local statistics over 3x3 windows (average pooling after reflection padding by 1, as is
    common in unsupervised flow / depth); ``c1, c2`` assume images in ``[0, 1]``.
    """
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    s_x = F.avg_pool2d(x * x, 3, 1) - mu_x * mu_x
    s_y = F.avg_pool2d(y * y, 3, 1) - mu_y * mu_y
    s_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * s_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (s_x + s_y + c2)
    return ((1 - num / den) / 2).clamp(0, 1)


def photometric(
    img_t: torch.Tensor,
    img_t1: torch.Tensor,
    flow: torch.Tensor,
    mask: torch.Tensor | None = None,
    w_l1: float = 1.0,
    w_l2: float = 1.0,
    w_ssim: float = 1.0,
    use_valid_mask: bool = True,
) -> torch.Tensor:
    """``w_l1 * L1 + w_l2 * L2 + w_ssim * (1 - SSIM) / 2`` between ``img_t`` and
    ``warp(img_t1, flow)``.

    img_t, img_t1: ``[B, C, H, W]`` (in ``[0, 1]`` for the SSIM constants); flow: ``[B, 2, H, W]``
    ``flow_{t->t+1}`` at image resolution. The paper combines L2, L1 and SSIM; its weights
    (default 1 each here) and any occlusion masking are not stated. ``mask [B, 1, H, W]``
    (e.g. visibility) and, with ``use_valid_mask``, the warp's validity mask restrict each mean;
    for SSIM both images are multiplied by the mask first, so masked-out pixels do not leak into
    the 3x3 windows of kept ones.
    """
    rec, valid = warp(img_t1, flow, return_mask=True)
    m = _combine(valid, mask, use_valid_mask)
    diff = img_t - rec
    loss = img_t.new_zeros(())
    if w_l1:
        loss = loss + w_l1 * _masked_mean(diff.abs(), m)
    if w_l2:
        loss = loss + w_l2 * _masked_mean(diff.pow(2), m)
    if w_ssim:
        a, b = (img_t, rec) if m is None else (img_t * m, rec * m)
        loss = loss + w_ssim * _masked_mean(ssim_loss_map(a, b), m)
    return loss


def smoothness(flow: torch.Tensor, image: torch.Tensor, alpha: float = 10.0, order: int = 1) -> torch.Tensor:
    """Edge-aware smoothness of ``flow [B, 2, H, W]`` guided by ``image [B, C, H', W']``.

    Weights ``exp(-alpha * mean_c |dI|)`` per direction (image resized bilinearly to the flow
    size if needed). ``order=1``: mean of ``w_x |d_x flow|`` and ``w_y |d_y flow|``, averaged
    over the two directions; ``order=2``: the same with second differences
    ``flow[x+1] - 2 flow[x] + flow[x-1]``, weighted by the smaller of the two adjacent
    first-order weights. The paper's order is not stated; an unofficial reimplementation uses
    order 2 with ``alpha=10``.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if image.shape[-2:] != flow.shape[-2:]:
        image = F.interpolate(image, size=flow.shape[-2:], mode="bilinear", align_corners=False)
    idx, idy = image_gradients(image)
    wx = torch.exp(-alpha * idx.abs().mean(1, keepdim=True))  # [B, 1, H, W-1]
    wy = torch.exp(-alpha * idy.abs().mean(1, keepdim=True))  # [B, 1, H-1, W]
    dx, dy = image_gradients(flow)
    if order == 2:
        dx, dy = dx[..., 1:] - dx[..., :-1], dy[..., 1:, :] - dy[..., :-1, :]
        wx, wy = torch.minimum(wx[..., 1:], wx[..., :-1]), torch.minimum(wy[..., 1:, :], wy[..., :-1, :])
    return 0.5 * ((wx * dx.abs()).mean() + (wy * dy.abs()).mean())


def cycle_consistency(
    feats_t: Sequence[torch.Tensor],
    flows_fw: Sequence[torch.Tensor],
    flows_bw: Sequence[torch.Tensor],
    use_valid_mask: bool = True,
) -> torch.Tensor:
    """Feature-space forward-backward cycle (the paper's Eq. 5), summed over levels.

    With backward warping, ``Y = warp(X_t, flow_{t+1->t})`` carries ``X_t`` into frame
    ``t+1``'s geometry and ``warp(Y, flow_{t->t+1})`` brings it back; the loss per level is
    ``mean ||X_t - warp(warp(X_t, flows_bw[l]), flows_fw[l])||^2``. It is 0 for zero flows and
    for any consistent constant pair ``(f, -f)``. With ``use_valid_mask`` only positions whose
    whole chain samples inside the image count (the paper's masking is not stated).
    """
    total = feats_t[0].new_zeros(())
    for x, f_fw, f_bw in zip(feats_t, flows_fw, flows_bw, strict=True):
        y, m1 = warp(x, f_bw, return_mask=True)
        back, m2 = warp(y, f_fw, return_mask=True)
        m = m2 * (warp(m1, f_fw) > 1 - 1e-4).to(m2.dtype) if use_valid_mask else None
        total = total + _masked_mean((x - back).pow(2), m)
    return total


def _var_cov(z: torch.Tensor, gamma: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg variance hinge and covariance terms of samples ``z [N, D]``."""
    n, d = z.shape
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + eps)
    var_loss = F.relu(gamma - std).mean()
    cov = (z.T @ z) / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return var_loss, off.pow(2).sum() / d


def variance_covariance(
    x: torch.Tensor,
    gamma: float = 1.0,
    eps: float = 1e-4,
    max_samples: int = 4096,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance and covariance terms on a feature map ``[B, C, H, W]`` (or ``[N, C]``).

    The ``B*H*W`` positions are the samples; at most ``max_samples`` of them are drawn without
    replacement (``torch.randperm`` with ``generator``, on the generator's device) to bound the
    cost. Returns ``(var_loss, cov_loss)``: ``mean_c relu(gamma - sqrt(Var_c + eps))`` and the
    sum of squared off-diagonal covariances divided by ``C``. MC-JEPA applies these to every
    pyramid level; its coefficients are not stated in the sources we could check.
    """
    z = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) if x.ndim == 4 else x
    if z.shape[0] > max_samples:
        dev = generator.device if generator is not None else "cpu"
        idx = torch.randperm(z.shape[0], generator=generator, device=dev)[:max_samples]
        z = z[idx.to(z.device)]
    return _var_cov(z, gamma, eps)


def vicreg(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim: float = 25.0,
    var: float = 25.0,
    cov: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes, Ponce, LeCun 2022) on embeddings ``[B, D]``; defaults 25 / 25 / 1 are theirs.

    ``sim``: MSE between ``z1`` and ``z2``; ``var``: the mean of the two branches' variance
    hinges; ``cov``: the sum of the two branches' covariance terms (as in the VICReg paper).
    Returns ``(total, {"sim", "var", "cov"})`` with the unweighted parts.
    """
    s = F.mse_loss(z1, z2)
    v1, c1 = _var_cov(z1, gamma, eps)
    v2, c2 = _var_cov(z2, gamma, eps)
    parts = {"sim": s, "var": (v1 + v2) / 2, "cov": c1 + c2}
    return sim * parts["sim"] + var * parts["var"] + cov * parts["cov"], parts


def world_size() -> int:
    """The number of processes of the default process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherBatch(torch.autograd.Function):
    """All processes' rows, concatenated in rank order; the backward pass sums the gradient of
    every process's copy (each process computes the same global loss) and keeps this
    process's rows (the official VICReg's ``FullGatherLayer``). Rows may differ in number
    between processes (corrupt samples dropped)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        world, rank = dist.get_world_size(), dist.get_rank()
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        counts = [int(s) for s in sizes]
        most = max(counts)
        padded = x.new_zeros((most, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.start, ctx.n = sum(counts[:rank]), x.shape[0]
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.start: ctx.start + ctx.n]


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """``x [B, ...]`` of every process concatenated (``[sum of B, ...]``), differentiable; ``x``
    itself in a single process."""
    return _GatherBatch.apply(x) if world_size() > 1 else x
