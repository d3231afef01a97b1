"""End-to-end fine-tuning of an encoder with a mean-pool + Linear head, in full or only its last
k blocks.

None of the official repos ships fine-tuning code (ijepa has no evaluation code; the evals/ of
jepa and vjepa2 train probes on frozen backbones; vjepa2 issue #93). This is a minimal protocol:
no mixup/cutmix, no layer-wise LR decay, no label smoothing (the MAE-style recipes use them);
augmentation is whatever ``train_set`` applies.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jepa_core.nn.interfaces import BlockwiseEncoder, Encoder
from jepa_core.optim import param_groups
from jepa_core.schedules import WarmupCosine
from torch import nn
from torch.utils.data import DataLoader, Dataset


class PooledClassifier(nn.Module):
    """``encoder`` -> tokens ``[B, N, D]`` mean-pooled (features ``[B, D]`` used as they are)
    -> ``head`` Linear(D -> num_classes). Average pooling, no class token: the I-JEPA protocol
    (ijepa issue #36)."""

    def __init__(self, encoder: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02, a=-2.0, b=2.0)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x)
        return self.head(out.mean(1) if out.ndim == 3 else out)


@dataclass
class FinetuneResult:
    accuracy: float  # test accuracy after the last epoch, %
    train_loss: list[float]  # mean training loss per epoch
    trainable_params: int
    total_params: int  # of the encoder + head
    model: PooledClassifier  # the fine-tuned copy (encoder + head), in eval mode
    seconds: float
    config: dict = field(default_factory=dict)
    predictions: torch.Tensor | None = None  # predicted class of each test sample, in order (confusion matrix)
    test_labels: torch.Tensor | None = None


def _embed_dim(encoder: nn.Module, sample: torch.Tensor, device) -> int:
    if isinstance(encoder, Encoder) and isinstance(encoder.embed_dim, int):
        return encoder.embed_dim
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        dim = int(encoder(sample[:1].to(device)).shape[-1])
    encoder.train(was)
    return dim


def _set_trainable(encoder: nn.Module, last_blocks: int | None, train_norm: bool, blocks_attr: str) -> None:
    """Freeze what must not train. Parameters that were already frozen (a fixed sin-cos
    ``pos_embed``) stay frozen in every mode."""
    if last_blocks is None:
        return
    blocks: object  # narrowed by the isinstance checks below
    norm: object
    if blocks_attr == "blocks":
        if not isinstance(encoder, BlockwiseEncoder):
            raise ValueError("last_blocks needs an encoder with a ModuleList 'blocks' and a final 'norm' "
                             "(jepa_core.nn.interfaces.BlockwiseEncoder), or pass blocks_attr=")
        blocks, norm = encoder.blocks, encoder.norm
    else:  # the caller names the block list of another kind of model
        blocks, norm = getattr(encoder, blocks_attr, None), getattr(encoder, "norm", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        raise ValueError(f"last_blocks needs an encoder with a ModuleList {blocks_attr!r}")
    if not 0 <= last_blocks <= len(blocks):
        raise ValueError(f"last_blocks must be in [0, {len(blocks)}], got {last_blocks}")
    was = {id(p): p.requires_grad for p in encoder.parameters()}
    encoder.requires_grad_(False)
    trained = list(blocks)[len(blocks) - last_blocks :]
    if train_norm and last_blocks > 0 and isinstance(norm, nn.Module):
        trained.append(norm)
    for m in trained:
        for p in m.parameters():
            p.requires_grad_(was[id(p)])


@torch.no_grad()
def _predict(model: nn.Module, dataset: Dataset, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted classes, labels)`` of every sample of ``dataset``, in order, on CPU."""
    model.eval()
    preds, labels = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        preds.append(model(x.to(device)).argmax(1).cpu())
        labels.append(torch.as_tensor(y).long().cpu())
    return torch.cat(preds), torch.cat(labels)


def finetune(
    encoder: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    num_classes: int,
    last_blocks: int | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    *,
    weight_decay: float = 0.05,
    final_lr: float = 0.0,
    warmup_epochs: float = 0.0,
    batch_size: int = 64,
    betas: tuple[float, float] = (0.9, 0.999),
    clip_grad: float | None = None,
    train_norm: bool = True,
    blocks_attr: str = "blocks",
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> FinetuneResult:
    """Fine-tune a deep copy of ``encoder`` (the caller's model is not touched) with a mean-pool
    + Linear head on ``train_set`` (items ``(x, y)``) and return the test accuracy.

    ``last_blocks=None`` trains the whole encoder; ``last_blocks=k`` trains only the last k
    entries of ``encoder.<blocks_attr>`` (and, with ``train_norm``, the final ``norm`` that
    follows them) and freezes the rest; ``k=0`` trains the head only. AdamW with the official
    no-decay rule (biases and 1-D parameters, jepa_core.optim.param_groups), LR per step: linear
    warm-up over ``warmup_epochs`` from 0, then cosine to ``final_lr`` (jepa_core.schedules
    ``WarmupCosine``). The frozen encoder part still runs in train mode (the ViTs here have no
    dropout or batch norm). Deterministic given ``seed`` (head init and batch order; the global
    RNG state is restored).
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    enc = copy.deepcopy(encoder).to(device)
    _set_trainable(enc, last_blocks, train_norm, blocks_attr)
    first_x = train_set[0][0]
    dim = _embed_dim(enc, torch.as_tensor(first_x).unsqueeze(0), device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PooledClassifier(enc, dim, num_classes).to(device)
    groups = param_groups({"encoder": model.encoder, "head": model.head})
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    ipe = len(loader)
    total = max(1, epochs * ipe)
    sched = WarmupCosine(0.0, lr, final_lr, int(warmup_epochs * ipe), total)
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    step = 0
    for _ in range(epochs):
        model.train()
        s, n = 0.0, 0
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = sched.value(step)
            loss = F.cross_entropy(model(x.to(device)), torch.as_tensor(y).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(trainable, clip_grad)
            opt.step()
            s += float(loss.detach())
            n += 1
            step += 1
        losses.append(s / max(n, 1))
    preds, labels = _predict(model, test_set, batch_size, device)
    return FinetuneResult(
        accuracy=100.0 * int((preds == labels).sum()) / max(len(labels), 1),
        train_loss=losses,
        trainable_params=sum(p.numel() for p in trainable),
        total_params=sum(p.numel() for p in model.parameters()),
        model=model.eval(),
        seconds=round(time.perf_counter() - t0, 2),
        config={"last_blocks": last_blocks, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
                "batch_size": batch_size, "seed": seed, "steps": step},
        predictions=preds,
        test_labels=labels,
    )
