"""S-JEPA's objective (Abdelfattah & Alahi, ECCV 2024, Fig. 2): per target token, the
cross-entropy ``-sum_c p2_c log p1_c`` over the ``C_e`` channels between the softmax of the
centred, sharpened target latents (``p2``, no gradient) and the softmax of the predictions
(``p1``), as DINO's loss without its projection head.

Not stated by the paper, chosen here (each a config key of
:class:`jepa_skeleton.sjepa.SJEPALossConfig`): the centre is an EMA of the batch mean of the
target latents with momentum 0.9, updated after the loss (DINO's rule); the teacher
temperature is 0.06 and the student's 0.1. Under DDP the batch mean is averaged over the
processes, so every rank holds the same centre.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["CenteredCrossEntropy", "centered_cross_entropy"]


def centered_cross_entropy(pred: torch.Tensor, target: torch.Tensor, center: torch.Tensor,
                           student_temp: float = 0.1, teacher_temp: float = 0.06) -> torch.Tensor:
    """``mean over tokens of -sum_c softmax((target - center) / teacher_temp)_c *
    log_softmax(pred / student_temp)_c``; ``pred`` and ``target`` ``[..., C]``, ``center`` ``[C]``."""
    p2 = F.softmax((target.float() - center) / teacher_temp, dim=-1)
    log_p1 = F.log_softmax(pred.float() / student_temp, dim=-1)
    return -(p2 * log_p1).sum(-1).mean()


class CenteredCrossEntropy(nn.Module):
    """:func:`centered_cross_entropy` with its running centre, the buffer ``center [C]`` (saved in
    checkpoints). ``forward(pred, target)`` returns the loss and the mean entropy of the target
    distribution (a collapse monitor: 0 for one-hot targets, log C for uniform ones); in training
    mode with ``centering`` it then moves the centre towards the batch mean of ``target``:
    ``c <- m c + (1 - m) mean(target)`` (all-reduced across processes). Without ``centering``
    the centre stays zero."""

    def __init__(self, dim: int, student_temp: float = 0.1, teacher_temp: float = 0.06,
                 center_momentum: float = 0.9, centering: bool = True):
        super().__init__()
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.center_momentum, self.centering = center_momentum, centering
        self.register_buffer("center", torch.zeros(dim))

    center: torch.Tensor  # the running centre (a buffer, saved in checkpoints)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = centered_cross_entropy(pred, target, self.center, self.student_temp, self.teacher_temp)
        with torch.no_grad():
            log_p2 = F.log_softmax((target.float() - self.center) / self.teacher_temp, dim=-1)
            entropy = -(log_p2.exp() * log_p2).sum(-1).mean()
        if self.centering and self.training:
            self.update_center(target)
        return loss, entropy

    @torch.no_grad()
    def update_center(self, target: torch.Tensor) -> None:
        mean = target.detach().float().reshape(-1, target.shape[-1]).mean(0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(mean, alpha=1 - self.center_momentum)
