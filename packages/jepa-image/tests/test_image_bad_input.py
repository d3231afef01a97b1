"""Bad input gives clear errors; corrupt images are skipped and counted, up to a limit."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from jepa_core.cli import main as jepa_main
from jepa_core.config import ConfigError
from jepa_core.data import CorruptSampleError
from jepa_core.run import pretrain
from jepa_core.trainer import TooManyBadSamplesError
from jepa_image.data import ImageFolder
from jepa_image.ijepa import SPEC

TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
    "data.batch_size=16", "data.num_workers=0", "data.pin_memory=false",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "eval.enabled=false",
]


def _image_folder(root, good_per_class: int, bad_per_class: int, classes=("cat", "dog")):
    """root/train/<class>/: small random RGB PNGs, plus .jpg files of random bytes named to sort
    first (so they are also among the first samples of the dataset)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(good_per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"img{i:03d}.png")
        for i in range(bad_per_class):
            (d / f"000_bad{i}.jpg").write_bytes(os.urandom(400))
    return root


def _folder_overrides(root) -> list[str]:
    return TINY + [
        "data.dataset=imagefolder", f"data.root={root}", "data.image_size=28", "model.in_chans=3",
        "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "train.log_every=1",
    ]


# ---------------------------------------------------------------------------------------------
# config errors


def test_unknown_key_lists_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        pretrain("ijepa", overrides=["optim.lrr=1"], run_dir=tmp_path / "r")
    msg = str(err.value)
    assert "optim.lrr" in msg
    for valid in ("lr", "start_lr", "final_lr", "warmup", "epochs"):
        assert valid in msg
    assert not (tmp_path / "r").exists()  # nothing was started


def test_unknown_section_is_rejected():
    with pytest.raises(ConfigError, match="modle"):
        SPEC.load_config("demo", overrides=["modle.depth=2"])


@pytest.mark.parametrize(
    "override, words",
    [
        ("optim.lr=fast", ["optim.lr", "number", "fast"]),
        ("data.batch_size=1.5", ["data.batch_size", "integer"]),
        ("train.progress=maybe", ["train.progress", "true/false"]),
        ("mask.aspect_ratio=[1,2,3]", ["mask.aspect_ratio", "2 values"]),
        ("model.loss=huber", ["model.loss", "smooth_l1"]),
        ("data.dataset=imagenet", ["data.dataset", "imagefolder", "fashion_mnist_demo"]),
    ],
)
def test_wrong_type_raises_config_error(tmp_path, override, words):
    with pytest.raises(ConfigError) as err:
        pretrain("ijepa", overrides=[override], run_dir=tmp_path / "r")
    for w in words:
        assert w in str(err.value)


def test_correct_types_are_coerced():
    cfg = SPEC.load_config("demo", overrides=["optim.lr=1e-4", "data.batch_size=8", "optim.epochs=2"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.batch_size == 8 and isinstance(cfg.data.batch_size, int)


def test_unknown_method_lists_installed_methods():
    with pytest.raises(ConfigError, match="ijepa"):
        pretrain("ijepaa")


def test_cli_unknown_key_exits_2_with_a_clear_message(capsys, tmp_path):
    code = jepa_main(["pretrain", "ijepa", "optim.lrr=1", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "jepa: error:" in err
    assert "optim.lrr" in err and "valid keys" in err and "lr" in err
    assert "Traceback" not in err


def test_cli_config_command_prints_the_resolved_config(capsys):
    assert jepa_main(["config", "ijepa", "--preset", "in1k_vith14", "optim.lr=5e-4"]) == 0
    out = capsys.readouterr().out
    import yaml

    cfg = yaml.safe_load(out)
    assert cfg["optim"]["lr"] == 5e-4 and cfg["model"]["encoder"] == "vit_huge"


# ---------------------------------------------------------------------------------------------
# missing data


def test_imagefolder_without_root_says_what_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        pretrain("ijepa", overrides=TINY + ["data.dataset=imagefolder"], run_dir=tmp_path / "r")


def test_imagefolder_missing_root_says_where_it_looked(tmp_path):
    missing = tmp_path / "no_such_dataset"
    with pytest.raises(FileNotFoundError) as err:
        pretrain("ijepa", overrides=_folder_overrides(missing), run_dir=tmp_path / "r")
    msg = str(err.value)
    assert str(missing / "train") in msg
    assert "<class>" in msg  # the expected layout


def test_cli_missing_data_exits_2(tmp_path, capsys):
    missing = tmp_path / "nothing_here"
    code = jepa_main(["pretrain", "ijepa", *_folder_overrides(missing), "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert str(missing / "train") in capsys.readouterr().err


def test_imagefolder_without_images_or_classes(tmp_path):
    (tmp_path / "a" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolder(tmp_path / "a")
    (tmp_path / "b" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "b" / "train" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path / "b")


# ---------------------------------------------------------------------------------------------
# corrupt images


def test_imagefolder_reads_classes_and_flags_corrupt_files(tmp_path):
    root = _image_folder(tmp_path / "data", good_per_class=3, bad_per_class=1)
    ds = ImageFolder(root, "train")
    assert ds.classes == ["cat", "dog"]
    assert len(ds) == 8
    assert [label for _, label in ds.samples] == [0, 0, 0, 0, 1, 1, 1, 1]
    img, label = ds[1]
    assert img.size == (32, 32) and img.mode == "RGB" and label == 0
    with pytest.raises(CorruptSampleError, match="000_bad0.jpg"):
        ds[0]


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    root = _image_folder(tmp_path / "data", good_per_class=20, bad_per_class=1)
    run = tmp_path / "r"
    summary = pretrain(
        "ijepa", overrides=_folder_overrides(root) + ["optim.max_steps=8", "train.max_bad_fraction=0.2"],
        run_dir=run,
    )
    assert summary["steps"] == 8
    assert summary["bad_samples"] > 0
    rows = list(csv.DictReader(open(run / "metrics.csv", newline="")))
    counts = [int(r["bad_samples"]) for r in rows]
    assert counts == sorted(counts)  # a running count
    assert counts[-1] == summary["bad_samples"]
    assert f"corrupt samples skipped: {summary['bad_samples']}" in (run / "report.md").read_text()
    # The mask picture is drawn from readable samples even though sample 0 is corrupt.
    assert (run / "plots" / "masks.png").is_file()
    assert (run / "checkpoints" / "latest.pt").is_file()


def test_bad_fraction_limit_stops_the_run(tmp_path):
    root = _image_folder(tmp_path / "data", good_per_class=20, bad_per_class=1)
    with pytest.raises(TooManyBadSamplesError) as err:
        pretrain("ijepa", overrides=_folder_overrides(root) + ["optim.max_steps=12", "train.max_bad_fraction=0.0"],
                 run_dir=tmp_path / "r")
    assert "max_bad_fraction=0.0" in str(err.value)


def test_mostly_corrupt_folder_stops_the_run(tmp_path):
    root = _image_folder(tmp_path / "data", good_per_class=6, bad_per_class=14)
    with pytest.raises(TooManyBadSamplesError, match="could not be read"):
        pretrain("ijepa", overrides=_folder_overrides(root) + ["optim.max_steps=12"], run_dir=tmp_path / "r")


def test_batch_of_only_corrupt_samples_is_skipped_and_resume_stays_exact(tmp_path):
    # Batch size 1: a corrupt file makes a batch with nothing left, which must be skipped (and
    # counted) without ending the run; a resumed run must continue from the same batch.
    root = _image_folder(tmp_path / "data", good_per_class=20, bad_per_class=1)
    common = _folder_overrides(root) + ["data.batch_size=1", "train.max_bad_fraction=0.5", "train.checkpoint_every=5"]
    full = pretrain("ijepa", overrides=common + ["optim.max_steps=30"], run_dir=tmp_path / "full")
    assert full["steps"] == 30 and full["bad_samples"] > 0
    pretrain("ijepa", overrides=common + ["optim.max_steps=12"], run_dir=tmp_path / "cut")
    resumed = pretrain("ijepa", overrides=common + ["optim.max_steps=30"], run_dir=tmp_path / "cut", resume=True)
    assert resumed["bad_samples"] == full["bad_samples"]
    a = torch.load(tmp_path / "full" / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "latest.pt", weights_only=True)
    assert a["batches_consumed"] == b["batches_consumed"] == 30 + full["bad_samples"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
