"""Cross-package tests: the main job (`jepa pretrain ijepa` with jepa-image and jepa-eval
installed together) and `jepa eval` on its run folder. Run by the `tests-integration` nox
session, which installs every package."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_pretrain_runs_the_probes_at_the_end(tmp_path):
    from jepa_core.run import pretrain

    run = tmp_path / "r"
    overrides = [
        "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4",
        "data.batch_size=32", "data.num_workers=0", "data.pin_memory=false",
        "train.device=cpu", "train.num_threads=1", "train.progress=false", "optim.max_steps=3",
        "eval.train_samples=300", "eval.batch_size=500", "eval.knn_k=[5,20]",
    ]
    summary = pretrain("ijepa", overrides=overrides, run_dir=run)
    names = ["pretrained (EMA target)", "random init", "raw pixels"]
    assert list(summary["evaluation"]) == names
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert list(saved) == names
    for name in names:
        r = saved[name]
        assert r["train_samples"] == 300 and r["test_samples"] == 2000
        assert set(r["knn"]) == {"5", "20"}
        # 10 Fashion-MNIST classes: every probe beats chance (10 %) by a margin.
        assert r["linear_probe"] > 25.0, (name, r)
    assert saved["pretrained (EMA target)"]["feature_dim"] == 32
    assert saved["raw pixels"]["feature_dim"] == 784
    report = (run / "report.md").read_text()
    assert "## Evaluation (frozen encoders)" in report
    for name in names:
        assert f"| {name} |" in report


@pytest.mark.slow
def test_jepa_eval_probes_a_finished_run(tmp_path, capsys):
    from jepa_core.cli import main
    from jepa_core.run import pretrain

    run = tmp_path / "r"
    pretrain("ijepa", overrides=[
        "model.encoder=custom", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4", "data.batch_size=32",
        "train.device=cpu", "train.num_threads=1", "train.progress=false", "optim.max_steps=2",
        "eval.enabled=false",
    ], run_dir=run)
    assert not (run / "eval").exists()
    code = main(["eval", str(run), "eval.train_samples=200", "eval.knn_k=[5]", "eval.random_baseline=false"])
    assert code == 0
    out = capsys.readouterr().out
    assert '"step": 2' in out and "| pretrained (EMA target) |" in out
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert list(saved) == ["pretrained (EMA target)", "raw pixels"]
    assert saved["pretrained (EMA target)"]["train_samples"] == 200
    assert saved["pretrained (EMA target)"]["feature_dim"] == 32
    assert set(saved["raw pixels"]["knn"]) == {"5"}


TINY = [
    "model.encoder=custom", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "model.pred_depth=1", "model.pred_emb_dim=16", "model.patch_size=4", "data.batch_size=32",
    "train.device=cpu", "train.num_threads=1", "train.progress=false", "train.log_every=2",
]


@pytest.mark.slow
def test_every_protocol_monitors_and_report_files(tmp_path, capsys):
    from jepa_core.cli import main
    from jepa_core.run import pretrain
    from PIL import Image

    run = tmp_path / "r"
    pretrain("ijepa", overrides=TINY + [
        "optim.max_steps=4", "eval.monitor_every=2", "eval.monitor_samples=200",
        "eval.protocols=[linear,knn,lowshot,attentive,finetune]", "eval.train_samples=400",
        "eval.knn_k=[5]", "eval.lowshot_fractions=[0.1]", "eval.lowshot_seeds=[0,1]",
        "eval.attentive_epochs=1", "eval.attentive_lrs=[1e-3]", "eval.attentive_wds=[0.01]",
        "eval.attentive_depth=1", "eval.finetune_epochs=1",
    ], run_dir=run)
    res = json.loads((run / "eval" / "results.json").read_text())
    pre = res["pretrained (EMA target)"]
    for key in ("linear_probe", "knn", "lowshot", "attentive_probe", "finetune"):
        assert key in pre, key
    assert set(pre["lowshot"]["0.1"]) == {"mean", "std"}
    # The raw-pixel baseline has no tokens: no attentive probe or fine-tuning for it.
    assert "attentive_probe" not in res["raw pixels"] and "finetune" not in res["raw pixels"]
    md = (run / "eval" / "results.md").read_text()
    assert "attentive probe (%)" in md and "| raw pixels |" in md and "| random init |" in md
    for png in ("accuracy", "confusion", "projection", "training"):
        with Image.open(run / "eval" / f"{png}.png") as im:
            assert im.size[0] > 300 and im.size[1] > 200
    monitors = (run / "monitors.csv").read_text().splitlines()
    assert monitors[0].startswith("step,rankme") and len(monitors) >= 3

    # `jepa eval` on one checkpoint file, with a protocol list.
    code = main(["eval", str(run / "checkpoints" / "latest.pt"), "--protocol", "linear",
                 "eval.random_baseline=false", "eval.train_samples=300"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| pretrained (EMA target) |" in out and "k-NN" not in out.split("|---")[0]
    res = json.loads((run / "eval" / "results.json").read_text())
    assert list(res) == ["pretrained (EMA target)", "raw pixels"]
    assert set(res["raw pixels"]) >= {"linear_probe"} and "knn" not in res["raw pixels"]
    assert main(["eval", str(run), "--protocol", "linear,bogus"]) == 2
    assert "unknown evaluation protocol 'bogus'" in capsys.readouterr().err


@pytest.mark.slow
def test_video_main_job_probes_both_tasks_beside_an_image_encoder_frame_by_frame(tmp_path):
    """`jepa pretrain vjepa` (tiny): the attentive and linear probes on motion direction and on
    object class, for the EMA target, a random init, I-JEPA trained on the training clips'
    frames (through the registry: jepa-video does not import jepa-image) and raw pixels."""
    from jepa_core.run import pretrain

    run = tmp_path / "v"
    summary = pretrain("vjepa", overrides=[
        f"data.root={tmp_path / 'clips'}", "data.demo_clips=32", "data.demo_eval_clips=16",
        "data.frames_per_clip=4", "data.batch_size=8", "model.embed_dim=32", "model.depth=1",
        "model.num_heads=2", "model.pred_depth=1", "model.pred_emb_dim=16", "model.pred_num_heads=2",
        "optim.max_steps=2", "train.device=cpu", "train.progress=false", "eval.attentive_epochs=1",
        "baseline.epochs=1", "baseline.overrides=[data.batch_size=32,model.pred_depth=1]",
    ], run_dir=run)
    rows = ["pretrained (EMA target)", "random init", "image encoder (ijepa on frames), frame by frame",
            "raw pixels"]
    assert list(summary["evaluation"]) == ["motion direction", "object class"]
    saved = json.loads((run / "eval" / "results.json").read_text())
    for task in ("motion direction", "object class"):
        assert list(saved[task]) == rows
        for name in rows[:3]:
            assert {"attentive_probe", "linear_probe"} <= set(saved[task][name])
            assert saved[task][name]["feature_dim"] == 32
    # The image encoder was trained on 32 clips x 4 frames, and sees every 2nd frame (tubelet 2).
    assert len(list((run / "image_baseline" / "frames" / "train").rglob("*.png"))) == 32 * 4
    image_cfg = (run / "image_baseline" / "run" / "config.yaml").read_text()
    assert "embed_dim: 32" in image_cfg and "image_size: 32" in image_cfg
    report = (run / "report.md").read_text()
    assert "### motion direction" in report and "### object class" in report
    assert (run / "eval" / "motion_direction" / "accuracy.png").is_file()
