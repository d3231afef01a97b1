"""Corrupt samples in the evaluation data (issue #13, item 4): feature and token extraction skip
and count them, every encoder of the table sees the same samples, and too many fail clearly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from jepa_core.config import EvalConfig
from jepa_core.data import CorruptSampleError
from jepa_core.nn import VisionTransformer
from jepa_eval.attentive import extract_tokens
from jepa_eval.features import CorruptSamples, TooManyCorruptSamplesError, extract_features
from jepa_eval.pretrain import probe_encoders
from torch.utils.data import Dataset

C = 4


class Images(Dataset):
    """C noisy copies of C fixed 8x8 prototypes; ``bad`` indices raise CorruptSampleError
    (``flaky``: only from the ``flaky``-th read of that sample on)."""

    def __init__(self, n_per_class: int, seed: int, bad=(), flaky: int = 0):
        protos = torch.rand(C, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(C).repeat(n_per_class)
        self.x = protos[self.y] + 0.1 * torch.randn(len(self.y), 1, 8, 8, generator=g)
        self.bad, self.flaky, self.reads = set(bad), flaky, {}

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.reads[i] = self.reads.get(i, 0) + 1
        if i in self.bad and self.reads[i] > self.flaky:
            raise CorruptSampleError(f"sample{i}.jpg: cannot decode")
        return self.x[i], int(self.y[i])


class RowTokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x[:, 0])


def _encoders():
    torch.manual_seed(0)
    return {"tiny vit": VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2),
            "row tokens": RowTokens()}


CFG = EvalConfig(batch_size=16, knn_k=(1, 5), random_baseline=False, raw_baseline=True)


@pytest.mark.fault
def test_extract_features_skips_and_records_corrupt_samples():
    ds = Images(10, seed=1, bad=(0, 5, 17))
    x, y = extract_features(None, ds, batch_size=8, progress=False)  # no tracker: skips all the same
    assert len(x) == len(y) == 37
    corrupt = CorruptSamples(ds, max_samples=20)
    x, y, idx = extract_features(None, ds, batch_size=8, progress=False, corrupt=corrupt, return_indices=True)
    assert sorted(corrupt.bad) == [0, 5, 17] and "sample5.jpg" in corrupt.bad[5]
    assert len(x) == 17 and idx.tolist() == [i for i in range(20) if i not in (0, 5, 17)]
    assert torch.equal(y, ds.y[idx])
    # a second pass (another encoder) does not even read the known bad samples again
    reads = dict(ds.reads)
    tok, y2 = extract_tokens(RowTokens(), ds, batch_size=8, corrupt=corrupt)
    assert tok.shape == (17, 8, 8) and torch.equal(y2, y)
    assert all(ds.reads[i] == reads[i] for i in (0, 5, 17))


@pytest.mark.fault
def test_too_many_corrupt_samples_is_a_clear_error():
    ds = Images(5, seed=1, bad=(1, 2, 3))
    corrupt = CorruptSamples(ds, max_bad_fraction=0.1, name="held-out")
    with pytest.raises(TooManyCorruptSamplesError, match=r"3 of 20 held-out samples are corrupt.*max_bad_fraction=0.1"
                       r".*sample1\.jpg"):
        extract_features(None, ds, batch_size=8, progress=False, corrupt=corrupt)


@pytest.mark.fault
@pytest.mark.parametrize("protocols", [("linear", "knn"), ("linear", "attentive")])
def test_probe_table_skips_the_same_samples_for_every_encoder(protocols):
    train, test = Images(10, seed=1, bad=(2, 11)), Images(5, seed=2, bad=(7,))
    cfg = dataclasses.replace(CFG, protocols=protocols, attentive_epochs=1, attentive_lrs=(1e-3,),
                              attentive_wds=(0.01,))
    with torch.random.fork_rng():
        out = probe_encoders(_encoders(), train, test, cfg, seed=0, max_bad_fraction=0.1)
    assert out["skipped_corrupt"] == {"train": 2, "test": 1, "total": 3}
    res = out["results"]
    assert set(res) == {"tiny vit", "row tokens", "raw pixels"}
    for r in res.values():
        assert (r["train_samples"], r["test_samples"]) == (38, 19)
        assert (r["skipped_corrupt"], r["skipped_corrupt_train"], r["skipped_corrupt_test"]) == (3, 2, 1)
    assert "Skipped 3 corrupt samples (2 training, 1 held-out)" in out["markdown"]
    # the first encoder found them; the others never read them
    assert train.reads[2] == 1 and test.reads[7] == 1


@pytest.mark.fault
def test_probe_table_fails_clearly_above_the_limit(tmp_path):
    train, test = Images(10, seed=1), Images(5, seed=2, bad=(0, 1, 2, 3, 4))
    with pytest.raises(TooManyCorruptSamplesError, match="5 of 20 held-out"):
        probe_encoders(_encoders(), train, test, CFG, seed=0, max_bad_fraction=0.1, out_dir=tmp_path)


@pytest.mark.fault
def test_sample_failing_only_later_is_dropped_from_that_encoder():
    """A sample the first encoder read fine but a later pass finds corrupt is counted and left out
    of that encoder's features (its row has one sample less)."""
    train, test = Images(10, seed=1, bad=(4,), flaky=1), Images(5, seed=2)
    with torch.random.fork_rng():
        out = probe_encoders(_encoders(), train, test, CFG, seed=0, max_bad_fraction=0.1)
    res = out["results"]
    assert res["tiny vit"]["train_samples"] == 40
    assert res["row tokens"]["train_samples"] == res["raw pixels"]["train_samples"] == 39
    assert out["skipped_corrupt"]["train"] == 1


def test_clean_evaluation_keeps_its_keys():
    with torch.random.fork_rng():
        out = probe_encoders(_encoders(), Images(5, seed=1), Images(3, seed=2), CFG, seed=0)
    assert set(out) == {"results", "markdown"}
    assert all("skipped_corrupt" not in r for r in out["results"].values())
    assert "corrupt" not in out["markdown"]


def test_progress_false_silences_the_extraction_bars(capsys):
    cfg = dataclasses.replace(CFG, protocols=("linear",))
    for progress in (True, False):
        with torch.random.fork_rng():
            probe_encoders(_encoders(), Images(40, seed=1), Images(20, seed=2), cfg, seed=0, progress=progress)
        err = capsys.readouterr().err
        assert ("features" in err and "it/s" in err) if progress else "it/s" not in err, err[-300:]
