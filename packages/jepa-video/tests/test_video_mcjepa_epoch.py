"""MC-JEPA's collator: ``batch["epoch"]`` from the stamped step in optimizer steps (the flow
losses start at the right optimizer step with ``optim.grad_accum > 1``), and content views
drawn for the global batch (each process gets its own slots' views, whatever the number of
processes)."""

from __future__ import annotations

import torch
from jepa_core import registry
from jepa_core.data import StampedDataset
from jepa_video import mcjepa

TINY = ["data.image_size=32", "data.train_clips=8", "data.num_frames=3", "model.channels=[8,12]",
        "model.radius=1", "model.hidden=[8]", "model.expander=[16,16]", "train.device=cpu"]


def _cfg(*extra: str):
    return registry.get_method("mcjepa").load_config("demo", overrides=TINY + list(extra))


def _batch(cfg, step: int, rank: int = 0, world: int = 1, indices=(0, 1, 2, 3)):
    dataset, collate = mcjepa.build_train_data(cfg, rank, world)
    stamped = StampedDataset(dataset, cfg.train.seed)
    return collate([stamped[(i, step, j * world + rank)] for j, i in enumerate(indices)])


def test_epoch_counts_optimizer_steps_with_grad_accum():
    # 16 pairs, 3 a micro-batch: 5 micro-batches an epoch; 2 of them an optimizer step: 2 steps an epoch
    cfg = _cfg("data.batch_size=3", "optim.grad_accum=2", "loss.flow_start_epoch=1")
    epochs = [_batch(cfg, s, indices=(0, 1, 2))["epoch"] for s in range(8)]
    assert epochs == [0, 0, 0, 0, 1, 1, 1, 1]  # micro-batches 4 and 5 are optimizer step 2, epoch 1
    model = mcjepa.build_model(cfg)
    assert "regression" not in model(_batch(cfg, 3, indices=(0, 1, 2)))
    assert "regression" in model(_batch(cfg, 4, indices=(0, 1, 2)))
    plain = _cfg("data.batch_size=3")
    assert [_batch(plain, s, indices=(0, 1, 2))["epoch"] for s in (4, 5)] == [0, 1]


def test_content_views_do_not_depend_on_the_number_of_processes():
    one = _batch(_cfg("data.batch_size=4"), 5)
    # 2 processes x 2: rank r's j-th sample is slot 2j + r of the same global batch
    r0 = _batch(_cfg("data.batch_size=2"), 5, 0, 2, indices=(0, 2))
    r1 = _batch(_cfg("data.batch_size=2"), 5, 1, 2, indices=(1, 3))
    assert torch.equal(r0["views"], one["views"][[0, 2]]) and torch.equal(r1["views"], one["views"][[1, 3]])
    assert torch.equal(r1["pairs"], one["pairs"][[1, 3]])
    process = _batch(_cfg("data.batch_size=2", "train.draw_scope=process"), 5, 1, 2, indices=(1, 3))
    assert not torch.equal(process["views"], one["views"][[1, 3]])  # the per-process draws differ
