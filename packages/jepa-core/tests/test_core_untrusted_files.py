"""Config files and overrides a user passes never run code (issue #13, item 3): YAML is read with
``yaml.safe_load``, so a python tag is an error, not a call."""

from __future__ import annotations

import pytest
from jepa_core import registry
from jepa_core.cli import main as jepa_main
from jepa_core.config import BaseConfig, ConfigError, load_yaml, parse_overrides
from jepa_core.registry import MethodSpec


def _fail(*_a, **_k):
    pytest.fail("must not get this far")


TOY = MethodSpec(name="toy", config_cls=BaseConfig, build_model=_fail, build_train_data=_fail, evaluator=None)


def _evil_yaml(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.yaml"
    path.write_text(f"optim:\n  lr: !!python/object/apply:os.system ['touch {marker}']\n")
    return path, marker


def _refused(err: BaseException) -> bool:
    """A clear refusal: a config error naming the python tag."""
    return isinstance(err, ConfigError) and "python/object/apply" in str(err)


@pytest.mark.fault
def test_python_tag_in_config_file_is_refused(tmp_path):
    path, marker = _evil_yaml(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert _refused(err.value)
    with pytest.raises(ConfigError) as err:
        TOY.load_config(file=path)
    assert _refused(err.value)
    assert not marker.exists()


@pytest.mark.fault
def test_python_tag_in_override_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    with pytest.raises(ConfigError) as err:
        parse_overrides([f"optim.lr=!!python/object/apply:os.system ['touch {marker}']"])
    assert _refused(err.value)
    assert not marker.exists()


@pytest.mark.fault
@pytest.mark.parametrize("command", ["pretrain", "config"])
def test_python_tag_in_cli_config_is_refused(tmp_path, monkeypatch, capsys, command):
    path, marker = _evil_yaml(tmp_path)
    monkeypatch.setattr(registry, "get_method", lambda name: TOY)
    args = [command, "toy", "--config", str(path)]
    if command == "pretrain":
        args += ["--run-dir", str(tmp_path / "run")]
    code = jepa_main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jepa: error:") and "python/object/apply" in err
    assert "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "run").exists()
