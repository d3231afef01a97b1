"""A missing optional dependency gives one message everywhere (jepa_core.extras): what needs
it and the pip line; the command prints it as one line with exit status 2."""

from __future__ import annotations

import pytest
from jepa_core import cli
from jepa_core.extras import MissingExtraError, require


def test_require_returns_the_module_or_names_the_extra():
    assert require("json", extra="x", purpose="p").dumps([1]) == "[1]"
    with pytest.raises(MissingExtraError, match=r"^train.wandb needs no_such_mod_xyz, which is not installed: "
                                                r"pip install 'jepa-core\[wandb\]'"):
        require("no_such_mod_xyz.sub", extra="wandb", purpose="train.wandb")
    with pytest.raises(ImportError):  # still an ImportError for code that catches those
        require("no_such_mod_xyz", extra="fid", purpose="FID", package="jepa-eval")


def test_the_command_prints_a_missing_extra_as_one_line(monkeypatch, capsys):
    def boom(argv):
        require("no_such_mod_xyz", extra="tensorboard", purpose="train.tensorboard=true")

    monkeypatch.setattr(cli, "_main", boom)
    assert cli.main(["pretrain", "x"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["jepa: error: train.tensorboard=true needs no_such_mod_xyz, which is not installed: "
                   "pip install 'jepa-core[tensorboard]' (ModuleNotFoundError: No module named 'no_such_mod_xyz')"]


@pytest.mark.parametrize("setting", ["tensorboard", "wandb"])
def test_the_trainer_logger_asks_for_the_extra_it_lacks(tmp_path, monkeypatch, setting):
    import builtins

    from jepa_core import trainer

    real = builtins.__import__

    def without(name, *a, **k):
        if name.startswith(("torch.utils.tensorboard", "wandb")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", without)
    kw = {"tensorboard": True} if setting == "tensorboard" else {"wandb": True}
    with pytest.raises(MissingExtraError, match=rf"pip install 'jepa-core\[{setting}\]'"):
        trainer.MetricsWriter(tmp_path, 0, **kw)
