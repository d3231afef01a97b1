"""Label-free representation monitors (RankMe, LiDAR, feature spread), a collapse report, and a
Trainer callback that tracks them during pretraining.

Why monitor: a JEPA's loss is a proxy (it can fall while the representation collapses, or rise
while it improves: vjepa2 issues #44, #56, #74 "usually a sign of partial collapse"), so the loss alone does not say whether training is healthy.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from jepa_core.data import CorruptSampleError
from torch import nn

from jepa_eval.probes import linear_probe

log = logging.getLogger(__name__)

# Thresholds of :func:`collapse_report` (heuristics chosen here, not from a paper).
# feature_std_ratio = mean per-dimension std of the L2-normalised features x sqrt(D): about 1 for
# isotropic features, 0 for a constant encoder. A randomly initialised ViT on normalised images
# gives ~0.2-0.3 (mean-pooled tokens), on raw [0, 1] noise images ~0.02-0.04.
STD_RATIO_THRESHOLD = 0.01
# RankMe of features that all point the same way (rank one) is 1. Uncentred mean-pooled features
# of small healthy encoders sit close to it too (on our development machines a healthy 128-d
# I-JEPA demo run measured 1.5-4.3, its random init about 1.7), so only values
# indistinguishable from rank one set the flag.
RANKME_THRESHOLD = 1.1


def _as_2d(features: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` as is; tokens ``[N, T, D]`` mean-pooled (the I-JEPA probe protocol)."""
    if features.ndim == 3:
        features = features.mean(1)
    if features.ndim != 2:
        raise ValueError(f"expected features [N, D] or tokens [N, T, D], got {tuple(features.shape)}")
    return features


def smooth_rank(values: torch.Tensor, eps: float) -> float:
    """``exp(H(p))`` with ``p_k = v_k / sum(v) + eps``: the effective number of non-zero values."""
    v = values.double().clamp_min(0)
    p = v / v.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023, "RankMe: Assessing the downstream performance of pretrained
    self-supervised representations by their rank"): ``exp(entropy(p))`` with
    ``p_k = sigma_k / ||sigma||_1 + eps`` over the singular values of the (uncentred) feature
    matrix ``[N, D]``; between ~1 (rank one) and ``min(N, D)``. The paper adds a small
    constant eps; 1e-7 (about float32 resolution) is the default chosen here.
    Tokens ``[N, T, D]`` are mean-pooled first. Computed in float64.
    """
    return smooth_rank(torch.linalg.svdvals(_as_2d(features).double()), eps)


@torch.no_grad()
def lidar(embeddings: torch.Tensor, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """LiDAR (Thilak et al. 2023, "LiDAR: Sensing Linear Probing Performance in Joint Embedding
    SSL Architectures"): the smooth rank of the LDA matrix of surrogate classes.

    ``embeddings [n, q, D]``: n surrogate classes (one per input sample) of q augmented views
    each. Between-class scatter ``S_b`` = covariance of the class means (1/(n-1)); within-class
    scatter ``S_w`` = pooled covariance of the views around their class mean (1/(n(q-1))) plus
    the ridge ``delta * I``; LiDAR = smooth rank (as RankMe, with ``eps``) of the eigenvalues of
    ``S_w^-1/2 S_b S_w^-1/2``. At most ``min(n - 1, D)``; ~1 for collapsed embeddings. The
    ridge is absolute, so it matters only when the within-class spread is below ~delta.
    ``delta`` and ``eps`` are the defaults chosen here. Computed in float64.
    """
    if embeddings.ndim != 3:
        raise ValueError(f"expected embeddings [n_classes, n_aug, D], got {tuple(embeddings.shape)}")
    n, q, D = embeddings.shape
    if n < 2 or q < 2:
        raise ValueError("LiDAR needs at least 2 surrogate classes with at least 2 views each")
    e = embeddings.double()
    mu_c = e.mean(1)
    centred_b = mu_c - mu_c.mean(0)
    s_b = centred_b.T @ centred_b / (n - 1)
    centred_w = (e - mu_c[:, None]).reshape(n * q, D)
    s_w = centred_w.T @ centred_w / (n * (q - 1)) + delta * torch.eye(D, dtype=torch.float64)
    w_vals, w_vecs = torch.linalg.eigh(s_w)
    inv_sqrt = w_vecs @ torch.diag(w_vals.clamp_min(delta).rsqrt()) @ w_vecs.T
    lda = inv_sqrt @ s_b @ inv_sqrt
    lda = 0.5 * (lda + lda.T)
    return smooth_rank(torch.linalg.eigvalsh(lda), eps)


@torch.no_grad()
def feature_std(features: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-dimension std of the L2-normalised features ``[N, D]`` and its mean (the SimSiam
    collapse indicator, Chen & He 2021): ~1/sqrt(D) for isotropic features, 0 when collapsed."""
    z = F.normalize(_as_2d(features).float(), dim=1)
    std = z.std(0)
    return std, float(std.mean())


@torch.no_grad()
def collapse_report(
    features: torch.Tensor,
    std_ratio_threshold: float = STD_RATIO_THRESHOLD,
    rankme_threshold: float = RANKME_THRESHOLD,
) -> dict:
    """RankMe and feature spread of ``features [N, D]`` (tokens ``[N, T, D]`` are mean-pooled),
    with ``collapsed = feature_std_ratio < std_ratio_threshold or rankme < rankme_threshold``.

    ``feature_std_ratio`` = mean normalised std x sqrt(D) (1 for isotropic features): a value
    below 0.01 means the outputs barely depend on the input (complete collapse); RankMe below
    1.1 means they all point in one direction. Both thresholds are heuristics (module
    constants). ``rankme_ratio`` = RankMe / min(N, D) is reported to judge dimensional
    collapse, but does not set the flag.
    """
    f = _as_2d(features)
    N, D = f.shape
    _, std_mean = feature_std(f)
    rm = rankme(f)
    ratio = std_mean * math.sqrt(D)
    return {
        "rankme": rm,
        "rankme_ratio": rm / min(N, D),
        "feature_std_mean": std_mean,
        "feature_std_ratio": ratio,
        "num_samples": N,
        "dim": D,
        "collapsed": bool(ratio < std_ratio_threshold or rm < rankme_threshold),
    }


class CollapseMonitor:
    """Trainer callback: RankMe, feature spread, the collapse flag and (with ``labels``) an
    online linear-probe accuracy of the encoder, every ``every_n_steps`` optimizer steps.

    ``jepa_core.trainer.Trainer`` calls callbacks as ``cb(trainer, step, row)`` on logged steps
    only, **after** it has written ``row`` to metrics.csv, whose columns are fixed by the first
    row. So the values are written to **``<run_dir>/monitors.csv``** (columns fixed at
    construction: ``step`` + :attr:`columns`; on resume, rows at or after the first new step
    are dropped), added to ``row`` (so they appear in ``FitResult.history``) and kept in
    :attr:`history`. Only the main rank computes.

    When: on the first logged step, on every logged step that reaches or passes a multiple of
    ``every_n_steps``, and on the last step. Choose ``every_n_steps`` as a multiple of
    ``train.log_every`` to hit exact multiples.

    ``dataset``: items ``x`` or ``(x, y, ...)`` with tensor ``x``; a fixed random subset of
    ``num_samples`` items (seeded) is loaded once and kept in memory. The encoder is
    ``trainer.model.eval_encoder()`` (the EMA target, as the official evals) or, with
    ``encoder="context"``, ``trainer.model.encoder``; it runs in eval mode without gradients
    (its mode is restored). Tokens are mean-pooled. The online probe is
    :func:`jepa_eval.probes.linear_probe` fitted on one half of the subset (stratification not
    enforced) and scored on the other half. The global RNG state is left untouched.
    """

    def __init__(
        self,
        dataset,
        every_n_steps: int = 1000,
        num_samples: int = 1024,
        labels: bool = False,
        batch_size: int = 256,
        encoder: str = "eval",
        filename: str = "monitors.csv",
        seed: int = 0,
        std_ratio_threshold: float = STD_RATIO_THRESHOLD,
        rankme_threshold: float = RANKME_THRESHOLD,
    ):
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        if encoder not in ("eval", "context"):
            raise ValueError(f"encoder must be 'eval' or 'context', got {encoder!r}")
        self.dataset = dataset
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.labels = labels
        self.batch_size = batch_size
        self.encoder = encoder
        self.filename = filename
        self.seed = seed
        self.std_ratio_threshold = std_ratio_threshold
        self.rankme_threshold = rankme_threshold
        self.columns: list[str] = ["rankme", "rankme_ratio", "feature_std", "feature_std_ratio", "collapsed"]
        if labels:
            self.columns.append("online_probe_acc")
        self.history: list[dict] = []
        self._last_step: int | None = None
        self._data: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.skipped_corrupt = 0  # corrupt samples left out of the monitor set
        self._file_ready = False

    # -- data ----------------------------------------------------------------------------------

    def _load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._data is None:
            n = min(self.num_samples, len(self.dataset))
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(self.dataset), generator=g)[:n].sort().values.tolist()
            xs, ys = [], []
            for i in idx:
                try:
                    item = self.dataset[i]
                except CorruptSampleError:  # skipped, as training and the final evaluation do
                    self.skipped_corrupt += 1
                    continue
                if isinstance(item, (tuple, list)):
                    xs.append(torch.as_tensor(item[0]))
                    if self.labels:
                        ys.append(int(item[1]))
                else:
                    if self.labels:
                        raise ValueError("labels=True needs dataset items (x, y)")
                    xs.append(torch.as_tensor(item))
            if not xs:
                raise CorruptSampleError(f"all {n} monitor samples of the evaluation set are corrupt")
            self._data = (torch.stack(xs), torch.tensor(ys, dtype=torch.long) if self.labels else None)
        return self._data

    @torch.no_grad()
    def features(self, encoder: nn.Module, device: torch.device | str = "cpu") -> torch.Tensor:
        """Mean-pooled encoder outputs of the monitoring subset, float32 on CPU."""
        x, _ = self._load()
        was_training = encoder.training
        encoder.eval()
        out = []
        try:
            for i in range(0, len(x), self.batch_size):
                f = encoder(x[i : i + self.batch_size].to(device))
                out.append(_as_2d(f).float().cpu())
        finally:
            encoder.train(was_training)
        return torch.cat(out)

    def compute(self, encoder: nn.Module, device: torch.device | str = "cpu") -> dict:
        """The monitor values for ``encoder`` (the dict written at each monitored step)."""
        with torch.random.fork_rng(devices=[]):
            feats = self.features(encoder, device)
            rep = collapse_report(feats, self.std_ratio_threshold, self.rankme_threshold)
            values = {
                "rankme": rep["rankme"],
                "rankme_ratio": rep["rankme_ratio"],
                "feature_std": rep["feature_std_mean"],
                "feature_std_ratio": rep["feature_std_ratio"],
                "collapsed": int(rep["collapsed"]),
            }
            if self.labels:
                _, y = self._load()
                assert y is not None  # _load returns labels whenever self.labels is set
                perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed + 1))
                half = len(y) // 2
                tr, te = perm[:half], perm[half:]
                res = linear_probe(feats[tr], y[tr], feats[te], y[te], seed=self.seed)
                values["online_probe_acc"] = res.accuracy
        return values

    # -- callback --------------------------------------------------------------------------------

    def _due(self, step: int, total_steps: int | None) -> bool:
        if self._last_step is None or step == total_steps:
            return True
        return step // self.every_n_steps > self._last_step // self.every_n_steps

    def _write(self, run_dir: Path, step: int, values: dict) -> None:
        path = Path(run_dir) / self.filename
        fields = ["step", *self.columns]
        if not self._file_ready:
            kept: list[dict] = []
            if path.exists():
                with open(path, newline="") as f:
                    kept = [r for r in csv.DictReader(f) if int(float(r["step"])) < step]
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(kept)
            self._file_ready = True
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow({"step": step, **values})

    def __call__(self, trainer, step: int, row: dict) -> None:
        if not self._due(step, getattr(trainer, "total_steps", None)):
            return
        self._last_step = step
        dist = getattr(trainer, "dist", None)
        if dist is not None and not dist.is_main:
            return
        model = trainer.model
        enc = model.eval_encoder() if self.encoder == "eval" else model.encoder
        values = self.compute(enc, trainer.device)
        row.update(values)
        self.history.append({"step": step, **values})
        self._write(trainer.run_dir, step, values)
        if values["collapsed"]:
            log.warning(
                "step %d: the representation looks collapsed (RankMe %.2f, feature std ratio %.4f)",
                step, values["rankme"], values["feature_std_ratio"],
            )

