"""The ``dense`` protocol: how well frozen *patch tokens* carry per-pixel semantics.

Data: ``(input, label map)`` pairs, a LongTensor label map ``[H, W]`` (a class per pixel,
``ignore_index`` for unlabeled pixels) per input, e.g. a method's
``MethodSpec.build_dense_eval_data`` (the I-JEPA demo: Fashion-MNIST scenes,
``jepa_image.dense_demo``). Tokens come from the same extraction as the attentive probe
(:func:`jepa_eval.attentive.extract_tokens`: ``encoder(x)`` in eval mode, all output tokens);
the raw-pixel baseline cuts the input into the same token grid (:func:`patchify`).

Two probes, with fixed settings (``eval.dense_*``; nothing is selected on the held-out split):

- **linear segmentation probe** (:func:`linear_segmentation_probe`): one linear classifier
  applied to every token (tokens standardised with the training tokens' per-dimension mean and
  std), its logits laid on the token grid and bilinearly upsampled to the label map's
  resolution, trained with per-pixel cross-entropy (unlabeled pixels ignored), AdamW with a
  cosine schedule;
- **patch k-NN label transfer** (:func:`knn_transfer`): every training patch gets the
  *majority* label of its labeled pixels (:func:`patch_labels`; the majority rather than the
  centre pixel, so that a patch's label is what most of it shows, and so that even-sized patches
  have no ambiguous centre; ties go to the lower class index; a patch without labeled pixels is
  left out); each held-out patch takes the vote of its k nearest training patches (cosine
  similarity, votes weighted by ``exp(sim / T)`` as the image k-NN probe), and every pixel
  takes the label of the patch it lies in (nearest upsampling: the transfer labels patches).

Scores (:func:`segmentation_scores`): pixel accuracy over the labeled pixels, IoU per class
``TP / (TP + FP + FN)`` and mIoU, the mean over the classes that occur in the held-out labels or
predictions (a class with an empty union has no IoU and is left out of the mean).

Token grid: ``encoder.token_grid(x)`` (:class:`jepa_core.nn.encoder.MaskedEncoder`), else
``encoder.patch_embed.grid(x)`` (a :class:`jepa_core.nn.interfaces.Tokenizer`), else the grid
of the token count with the input's aspect ratio. A grid with one more dimension than the label
map (video tokens ``(T', H', W')`` for a per-clip ``[H, W]`` map) is averaged over its first.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

IGNORE_INDEX = 255  # the default label of unlabeled pixels (a dataset may set ``ignore_index``)
MAX_KNN_TRAIN_PATCHES = 200_000  # k-NN bank: a seeded subset of the training patches beyond this
SHOW_SCENES = 4  # held-out scenes whose predicted masks go into the report's PNG


# ------------------------------------------------------------------------------------------------
# scores


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``[C, C]`` counts, rows = true class, columns = predicted, over the pixels whose target is
    not ``ignore_index`` (and is a class below ``num_classes``)."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = target[valid] * num_classes + pred[valid].clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(conf: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """``{"miou", "pixel_accuracy"}`` in % and ``"per_class_iou"`` (``{name: % or None}``, None
    where the class has an empty union: neither in the labels nor predicted) of a confusion
    matrix; mIoU averages the classes with a non-empty union."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    total = conf.sum()
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    present = union > 0
    names = class_names or [str(c) for c in range(len(tp))]
    return {
        "miou": float(iou[present].mean() * 100) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total * 100) if total > 0 else 0.0,
        "per_class_iou": {n: (None if math.isnan(v) else round(float(v) * 100, 2)) for n, v in zip(names, iou.tolist())},
    }


# ------------------------------------------------------------------------------------------------
# tokens on a grid


def token_grid(encoder: nn.Module | None, x: torch.Tensor, num_tokens: int | None = None,
               spatial: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The token grid of input batch ``x`` (see the module docstring). ``num_tokens`` and
    ``spatial`` (the label map's size) are needed only for the fallback."""
    if encoder is not None:
        fn = getattr(encoder, "token_grid", None)
        if callable(fn):
            return tuple(int(g) for g in fn(x))
        pe = getattr(encoder, "patch_embed", None)
        if pe is not None and callable(getattr(pe, "grid", None)):
            return tuple(int(g) for g in pe.grid(x))
    if num_tokens is None or spatial is None or len(spatial) != 2:
        raise ValueError("cannot tell the token grid: the encoder has no token_grid(x) / patch_embed.grid(x), "
                         "and the fallback needs the token count and a 2-D label map")
    h, w = spatial
    gh = max(1, round(math.sqrt(num_tokens * h / w)))
    if num_tokens % gh:
        raise ValueError(f"{num_tokens} tokens do not form a grid with the aspect ratio of a {h}x{w} label map; "
                         "give the encoder a token_grid(x) method")
    return gh, num_tokens // gh


def patchify(x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Raw inputs ``[B, C, *S]`` cut into ``grid`` (each dimension of ``S`` a multiple of the grid's)
    as tokens ``[B, prod(grid), C * prod(patch)]`` in the grid's row-major order."""
    B, C, *S = x.shape
    if len(S) != len(grid) or any(s % g for s, g in zip(S, grid)):
        raise ValueError(f"an input of size {tuple(S)} does not split into a {tuple(grid)} token grid")
    patch = [s // g for s, g in zip(S, grid)]
    shape = [B, C]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(shape)
    n = len(grid)
    perm = [0] + [2 + 2 * i for i in range(n)] + [1] + [3 + 2 * i for i in range(n)]
    return x.permute(perm).reshape(B, math.prod(grid), C * math.prod(patch))


def spatial_tokens(tokens: torch.Tensor, grid: tuple[int, ...], spatial_dims: int) -> tuple[torch.Tensor, tuple]:
    """Tokens ``[N, prod(grid), D]`` on a grid of ``spatial_dims`` dimensions: a grid with one
    more (time first) is averaged over it. Returns the tokens and their grid."""
    grid = tuple(grid)
    if len(grid) == spatial_dims + 1:
        N, _, D = tokens.shape
        tokens = tokens.reshape(N, grid[0], -1, D).mean(1)
        grid = grid[1:]
    if len(grid) != spatial_dims or math.prod(grid) != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} tokens on a {grid} grid do not fit {spatial_dims}-D label maps")
    return tokens, grid


def upsample(scores: torch.Tensor, grid: tuple[int, ...], size: tuple[int, ...]) -> torch.Tensor:
    """Per-token scores ``[B, T, C]`` on ``grid`` -> ``[B, C, *size]``, (bi/tri)linear,
    ``align_corners=False``."""
    B, _, C = scores.shape
    maps = scores.transpose(1, 2).reshape(B, C, *grid)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(grid)]
    return F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)


def pixel_patches(size: tuple[int, ...], grid: tuple[int, ...]) -> torch.Tensor:
    """The token of each pixel of a map of ``size`` over ``grid``, ``[*size]`` (row-major token
    index): pixel ``p`` of a dimension of size ``S`` over ``g`` tokens lies in token ``floor(p * g / S)``."""
    idx = torch.zeros(size, dtype=torch.long)
    for d, (s, g) in enumerate(zip(size, grid)):
        view = [1] * len(size)
        view[d] = s
        idx = idx * g + (torch.arange(s) * g // s).view(view)
    return idx


def patch_labels(label_maps: torch.Tensor, grid: tuple[int, ...], num_classes: int,
                 ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The majority label of each token's pixels, ``[N, prod(grid)]`` (``ignore_index`` for a
    token without labeled pixels; ties: the lower class); pixels to tokens by :func:`pixel_patches`."""
    N, *S = label_maps.shape
    idx = pixel_patches(tuple(S), grid)
    T = math.prod(grid)
    lab = label_maps.reshape(N, -1).long()
    valid = (lab != ignore_index) & (lab >= 0) & (lab < num_classes)
    flat = (torch.arange(N)[:, None] * T + idx.reshape(1, -1)) * num_classes + lab.clamp(0, num_classes - 1)
    counts = torch.bincount(flat[valid], minlength=N * T * num_classes).reshape(N, T, num_classes)
    out = counts.argmax(-1)
    out[counts.sum(-1) == 0] = ignore_index
    return out


# ------------------------------------------------------------------------------------------------
# probes


def knn_transfer(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, num_classes: int,
                 k: int = 10, temperature: float = 0.07, chunk: int = 1024,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Vote shares ``[Q, C]`` (on CPU) of each test feature from its ``k`` nearest training
    features (cosine similarity; each neighbour votes for its label with weight ``exp(sim / T)``)."""
    bank = F.normalize(train_feats.to(device).float(), dim=1)
    labels = train_labels.to(device).long()
    k = min(k, len(bank))
    out = []
    for q in test_feats.split(chunk):
        q = F.normalize(q.to(device).float(), dim=1)
        sim, nn_idx = (q @ bank.T).topk(k, dim=1)
        w = (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=device).scatter_add_(1, labels[nn_idx], w)
        out.append((votes / votes.sum(1, keepdim=True)).cpu())
    return torch.cat(out)


@dataclass
class SegmentationResult:
    scores: dict  # segmentation_scores of the held-out split
    predictions: torch.Tensor  # [N_test, *S] predicted class per pixel
    train_loss: float  # mean cross-entropy of the last epoch
    seconds: float


def linear_segmentation_probe(train_tokens: torch.Tensor, train_maps: torch.Tensor, test_tokens: torch.Tensor,
                              test_maps: torch.Tensor, grid: tuple[int, ...], num_classes: int, epochs: int = 20,
                              lr: float = 1e-2, batch_size: int = 32, weight_decay: float = 0.0, seed: int = 0,
                              device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX,
                              class_names: list[str] | None = None) -> SegmentationResult:
    """A per-token linear classifier on standardised tokens ``[N, prod(grid), D]``, its logits
    upsampled to the label maps ``[N, *S]`` and trained with per-pixel cross-entropy (AdamW,
    cosine learning rate, fixed settings); scored on the held-out maps."""
    t0 = time.perf_counter()
    mean = train_tokens.float().mean((0, 1))
    std = train_tokens.float().std((0, 1)).clamp_min(1e-6)
    size = tuple(train_maps.shape[1:])
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(train_tokens.shape[-1], num_classes).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train_tokens)
    steps_per_epoch = -(-n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    mean, std = mean.to(device), std.to(device)
    last: list[float] = []
    for _ in range(epochs):
        last = []
        for idx in torch.randperm(n, generator=g).split(batch_size):
            x = (train_tokens[idx].to(device).float() - mean) / std
            y = train_maps[idx].to(device).long()
            logits = upsample(head(x), grid, size)
            loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last.append(loss.item())
    head.eval()
    preds = []
    with torch.no_grad():
        for idx in torch.arange(len(test_tokens)).split(max(batch_size, 256)):
            x = (test_tokens[idx].to(device).float() - mean) / std
            preds.append(upsample(head(x), grid, tuple(test_maps.shape[1:])).argmax(1).cpu())
    pred = torch.cat(preds)
    conf = confusion_matrix(pred, test_maps, num_classes, ignore_index)
    return SegmentationResult(segmentation_scores(conf, class_names), pred,
                              sum(last) / max(1, len(last)), time.perf_counter() - t0)


def knn_segmentation(train_tokens: torch.Tensor, train_maps: torch.Tensor, test_tokens: torch.Tensor,
                     test_maps: torch.Tensor, grid: tuple[int, ...], num_classes: int, k: int = 10,
                     temperature: float = 0.07, ignore_index: int = IGNORE_INDEX, seed: int = 0,
                     max_train_patches: int = MAX_KNN_TRAIN_PATCHES, class_names: list[str] | None = None,
                     device: torch.device | str = "cpu") -> tuple[dict, torch.Tensor]:
    """Patch k-NN label transfer (module docstring): pixel scores of the patches' vote winners
    spread over their pixels, plus ``patch_accuracy`` (% of held-out patches whose vote winner is their majority label).
    Training patches beyond ``max_train_patches`` are subsampled (seeded). Returns the scores and
    the predicted maps."""
    D = train_tokens.shape[-1]
    bank_y = patch_labels(train_maps, grid, num_classes, ignore_index).reshape(-1)
    bank_x = train_tokens.reshape(-1, D)
    keep = (bank_y != ignore_index).nonzero().squeeze(1)
    if len(keep) > max_train_patches:
        g = torch.Generator().manual_seed(seed)
        keep = keep[torch.randperm(len(keep), generator=g)[:max_train_patches]]
    if not len(keep):
        raise ValueError("no labeled training patches for the k-NN label transfer")
    bank_x, bank_y = bank_x[keep], bank_y[keep]
    N, T = test_tokens.shape[:2]
    votes = knn_transfer(bank_x, bank_y, test_tokens.reshape(-1, D), num_classes, k, temperature, device=device)
    votes = votes.reshape(N, T, num_classes)
    size = tuple(test_maps.shape[1:])
    pred = votes.argmax(-1)[:, pixel_patches(size, grid)]
    scores = segmentation_scores(confusion_matrix(pred, test_maps, num_classes, ignore_index), class_names)
    test_y = patch_labels(test_maps, grid, num_classes, ignore_index)
    ok = test_y != ignore_index
    scores["patch_accuracy"] = float((votes.argmax(-1)[ok] == test_y[ok]).float().mean() * 100) if ok.any() else 0.0
    return scores, pred


# ------------------------------------------------------------------------------------------------
# one encoder of the table


def dataset_classes(dataset, labels: torch.Tensor | None = None,
                    ignore_index: int = IGNORE_INDEX) -> tuple[int, list[str]]:
    """The number of classes and their names: the dataset's ``classes`` / ``num_classes`` (looked
    up through ``Subset`` wrappers), else the largest label + 1 and the class numbers."""
    d = dataset
    while d is not None:
        names = getattr(d, "classes", None)
        n = getattr(d, "num_classes", None)
        if names is not None:
            names = list(names)
            return int(n) if n is not None else len(names), names
        if n is not None:
            return int(n), [str(c) for c in range(int(n))]
        d = getattr(d, "dataset", None)
    if labels is None:
        raise ValueError("the dense dataset names no classes; pass the labels")
    valid = labels[labels != ignore_index]
    n = int(valid.max()) + 1 if len(valid) else 1
    return n, [str(c) for c in range(n)]


def dataset_ignore_index(dataset) -> int:
    d = dataset
    while d is not None:
        if hasattr(d, "ignore_index"):
            return int(d.ignore_index)
        d = getattr(d, "dataset", None)
    return IGNORE_INDEX


@torch.no_grad()
def extract_dense_tokens(encoder: nn.Module | None, dataset, batch_size: int = 64,
                         device: torch.device | str = "cpu", corrupt=None,
                         grid: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
    """``(tokens [N, T, D], label maps [N, *S], dataset indices [N], token grid)``: the encoder's
    output tokens (:func:`jepa_eval.attentive.extract_tokens`, the attentive probe's path), or
    with ``encoder=None`` the raw inputs cut into ``grid`` (:func:`patchify`)."""
    from jepa_eval.attentive import extract_tokens
    from jepa_eval.features import iterate_samples

    if encoder is not None:
        toks, maps, idx = extract_tokens(encoder, dataset, batch_size, device, corrupt=corrupt, return_indices=True)
        x0 = dataset[int(idx[0])][0].unsqueeze(0).to(device)
        found = token_grid(encoder, x0, toks.shape[1], tuple(maps.shape[1:]))
        return toks, maps, idx, found
    if grid is None:
        raise ValueError("the raw-pixel baseline needs the token grid of an encoder")
    tok_list: list[torch.Tensor] = []
    map_list: list[torch.Tensor] = []
    idx_list: list[torch.Tensor] = []
    for (x, y), i in iterate_samples(dataset, batch_size, corrupt):
        tok_list.append(patchify(x.float(), grid))
        map_list.append(torch.as_tensor(y))
        idx_list.append(i)
    if not tok_list:
        raise ValueError("no samples to extract tokens from (the dataset is empty or every sample is corrupt)")
    return torch.cat(tok_list), torch.cat(map_list).long(), torch.cat(idx_list), tuple(grid)


def dense_probe(encoder: nn.Module | None, train_set, test_set, cfg, device: torch.device | str = "cpu",
                seed: int = 0, corrupt: tuple | None = None,
                grid: tuple[int, ...] | None = None) -> tuple[dict, dict]:
    """Both dense probes on one frozen encoder (None: the raw inputs on ``grid``), with the
    settings of ``cfg`` (an :class:`jepa_core.config.EvalConfig`: ``dense_epochs``, ``dense_lr``,
    ``dense_batch_size``, ``dense_knn_k``, ``knn_temperature``, ``batch_size`` for extraction).
    ``corrupt``: the two splits' :class:`jepa_eval.features.CorruptSamples`, shared by the
    encoders of a table. Returns the JSON-able results and extras for the report
    (``grid``, held-out ``indices``, predicted maps of the first :data:`SHOW_SCENES` scenes)."""
    t0 = time.perf_counter()
    c_tr, c_te = corrupt or (None, None)
    tr_tok, tr_map, tr_idx, g = extract_dense_tokens(encoder, train_set, cfg.batch_size, device, c_tr, grid)
    te_tok, te_map, te_idx, _ = extract_dense_tokens(encoder, test_set, cfg.batch_size, device, c_te, g)
    if corrupt is not None:  # a sample found bad by a later pass is dropped from the earlier one too
        keep = c_tr.keep(tr_idx)
        tr_tok, tr_map = tr_tok[keep], tr_map[keep]
        keep = c_te.keep(te_idx)
        te_tok, te_map, te_idx = te_tok[keep], te_map[keep], te_idx[keep]
    ignore = dataset_ignore_index(test_set)
    num_classes, names = dataset_classes(test_set, torch.cat([tr_map.flatten(), te_map.flatten()]), ignore)
    spatial = tr_map.ndim - 1
    tr_tok, sg = spatial_tokens(tr_tok, g, spatial)
    te_tok, _ = spatial_tokens(te_tok, g, spatial)
    extract_s = time.perf_counter() - t0
    lin = linear_segmentation_probe(tr_tok, tr_map, te_tok, te_map, sg, num_classes, epochs=cfg.dense_epochs,
                                    lr=cfg.dense_lr, batch_size=cfg.dense_batch_size, seed=seed, device=device,
                                    ignore_index=ignore, class_names=names)
    knn, knn_pred = knn_segmentation(tr_tok, tr_map, te_tok, te_map, sg, num_classes, cfg.dense_knn_k,
                                     cfg.knn_temperature, ignore, seed, class_names=names, device=device)

    def rounded(s: dict) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in s.items()}

    r = {
        "linear": {**rounded(lin.scores), "train_loss": round(lin.train_loss, 4)},
        "knn": {"k": int(cfg.dense_knn_k), **rounded(knn)},
        "token_grid": list(g),
        "feature_dim": int(tr_tok.shape[-1]),
        "num_classes": num_classes,
        "train_scenes": int(len(tr_tok)),
        "test_scenes": int(len(te_tok)),
        "seconds": round(time.perf_counter() - t0, 1),
        "extract_seconds": round(extract_s, 1),
    }
    shown = te_idx[:SHOW_SCENES]
    x = {"grid": g, "classes": names, "indices": shown, "true": te_map[:SHOW_SCENES],
         "images": torch.stack([torch.as_tensor(test_set[int(i)][0]) for i in shown]),
         "linear": lin.predictions[:SHOW_SCENES], "knn": knn_pred[:SHOW_SCENES]}
    return r, x


def dense_markdown(results: dict, image_link: str | None = None) -> str:
    """The dense section of the report: mIoU and pixel accuracy per encoder, the linear probe's
    IoU per class, and the predicted masks' PNG (``image_link``)."""
    rows = {n: r["dense"] for n, r in results.items() if "dense" in r}
    if not rows:
        return ""
    first = next(iter(rows.values()))
    k = first["knn"]["k"]
    head = ("| encoder | linear mIoU (%) | linear pixel acc. (%) | k-NN k=" f"{k} mIoU (%) | k-NN pixel acc. (%) "
            "| k-NN patch acc. (%) | token grid |")
    lines = [head, "|---|" + "---:|" * 6]
    for name, d in rows.items():
        lin, knn = d["linear"], d["knn"]
        lines.append(f"| {name} | {lin['miou']:.2f} | {lin['pixel_accuracy']:.2f} | {knn['miou']:.2f} | "
                     f"{knn['pixel_accuracy']:.2f} | {knn['patch_accuracy']:.2f} | "
                     f"{'x'.join(map(str, d['token_grid']))} |")
    skipped = (first.get("skipped_corrupt_train", 0), first.get("skipped_corrupt_test", 0))
    note = (f"Frozen patch tokens; {first['train_scenes']} training scenes, scored on {first['test_scenes']} held-out "
            "scenes. Linear: a per-token linear classifier on standardised tokens, logits bilinearly upsampled "
            "to the label map, per-pixel cross-entropy, fixed settings (eval.dense_epochs, eval.dense_lr). "
            "k-NN: each held-out patch takes the exp(sim / T)-weighted vote of its k nearest training patches "
            "(cosine), a patch's label being the majority of its pixels, and its pixels take its vote winner. "
            "mIoU: mean over the classes in the held-out labels or predictions; unlabeled pixels ignored. "
            "Raw pixels: the input cut into the same token grid.")
    if any(skipped):
        note += (f" Skipped {sum(skipped)} corrupt scenes ({skipped[0]} training, {skipped[1]} held-out), left out "
                 "for every encoder.")
    classes = list(first["linear"]["per_class_iou"])
    per = ["| class | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for c in classes:
        cells = [d["linear"]["per_class_iou"].get(c) for d in rows.values()]
        per.append(f"| {c} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")
    parts = ["### Dense probes (segmentation)", "", "\n".join(lines), "", note, "",
             "IoU per class (%), linear segmentation probe:", "", "\n".join(per)]
    if image_link:
        parts += ["", f"![Predicted vs true masks on held-out scenes]({image_link})"]
    return "\n".join(parts)
