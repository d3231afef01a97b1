"""Issue #13, item 3: data files a user passes never run code."""

from __future__ import annotations

import os
import pickle

import pytest
from jepa_core.run import pretrain

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false",
]


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.fault
def test_pickle_payload_as_fashion_mnist_files_never_runs(tmp_path):
    """The user-supplied Fashion-MNIST folder is parsed as idx bytes, never unpickled."""
    marker, root = tmp_path / "PWNED", tmp_path / "fm"
    root.mkdir()
    payload = pickle.dumps(_Payload(marker))
    for kind in ("images-idx3", "labels-idx1"):
        (root / f"train-{kind}-ubyte").write_bytes(payload)
        (root / f"t10k-{kind}-ubyte").write_bytes(payload)
    with pytest.raises(ValueError, match="not an idx file"):
        pretrain("ijepa", run_dir=tmp_path / "r", overrides=TINY + [
            "data.dataset=fashion_mnist", f"data.root={root}", "optim.max_steps=1", "eval.enabled=false"])
    assert not marker.exists()
