"""Tests of the bundle helpers ``check_config_keys``, ``training_stats`` and ``bundle_root``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from sasnet_components.utils.bundle import bundle_root, check_config_keys, training_stats

GLOBALS = {"sasnet_components": "sasnet_components"}


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "train.yaml").write_text("num_labeled: 16\nbatch_size: 4\nnetwork:\n  _target_: torch.nn.Identity\n")
    (configs / "evaluate.yaml").write_text("sw_batch_size: 2\n")
    (configs / "metadata.json").write_text('{"version": "0.1.0", "not_a_key": 1}')
    (configs / "notes.txt").write_text("ignored: 1\n")
    return configs


def test_known_keys_pass(config_dir: Path):
    # keys from both YAML files, and `_meta_`, are valid
    parser = ConfigParser({"num_labeled": 8, "batch_size": 2, "sw_batch_size": 1, "_meta_": {}})
    assert check_config_keys(str(config_dir), parser=parser) is True


def test_typo_raises_with_suggestion(config_dir: Path):
    parser = ConfigParser({"num_labeled": 16, "num_labled": 8})
    with pytest.raises(KeyError, match=r"unknown config key\(s\) \['num_labled'\].*'num_labled': did you mean \['num_labeled'\]"):
        check_config_keys(str(config_dir), parser=parser)


def test_unrelated_key_has_no_suggestion(config_dir: Path):
    parser = ConfigParser({"zzz": 1})
    with pytest.raises(KeyError, match=r"'zzz': no similar key"):
        check_config_keys(str(config_dir), parser=parser)


def test_metadata_and_other_files_define_no_keys(config_dir: Path):
    for key in ("not_a_key", "ignored"):
        with pytest.raises(KeyError, match=rf"unknown config key\(s\) \['{key}'\]"):
            check_config_keys(str(config_dir), parser=ConfigParser({key: 1}))


def test_extra_keys_accepted(config_dir: Path):
    parser = ConfigParser({"num_labeled": 16, "resume_from": "x.pt"})
    with pytest.raises(KeyError, match="resume_from"):
        check_config_keys(str(config_dir), parser=parser)
    assert check_config_keys(str(config_dir), parser=parser, extra_keys=["resume_from"]) is True


def test_active_parser_is_found_from_a_config_expression(config_dir: Path):
    # evaluated by the parser itself (as in a bundle's `initialize`): the parser is found on the call stack
    (config_dir / "extra.yaml").write_text("check: null\n")
    expr = f"$sasnet_components.utils.bundle.check_config_keys({str(config_dir)!r})"
    good = ConfigParser({"num_labeled": 1, "check": expr}, globals=GLOBALS)
    bad = ConfigParser({"num_labled": 1, "check": expr}, globals=GLOBALS)
    assert good.get_parsed_content("check") is True
    with pytest.raises(RuntimeError) as info:
        bad.get_parsed_content("check")
    assert "did you mean ['num_labeled']" in repr(info.value.__cause__)


def test_without_parser_warns_and_passes(config_dir: Path, caplog):
    with caplog.at_level("WARNING"):
        assert check_config_keys(str(config_dir)) is True
    assert "no active ConfigParser" in caplog.text


def test_training_stats_from_dict():
    w = torch.tensor(2.0, requires_grad=True)
    output = {"loss": w * 1.5, "loss_seg": 0.25, "loss_plc": torch.tensor(0.5), "loss_src": 0.125, "gamma": 1.0, "pred": torch.zeros(2)}
    stats = training_stats(output)
    assert stats == {"loss": 3.0, "loss_seg": 0.25, "loss_plc": 0.5, "loss_src": 0.125, "gamma": 1.0}
    assert all(type(v) is float for v in stats.values())


def test_training_stats_from_list_takes_first():
    first = {"loss": 1.0, "loss_seg": 2.0, "loss_plc": 3.0, "loss_src": 4.0, "gamma": 0.5}
    second = {k: 9.0 for k in first}
    assert training_stats([first, second]) == first


def test_bundle_root_default_outside_workflow():
    assert bundle_root() == "."
    assert bundle_root(default="/some/where") == "/some/where"
    # a bare ConfigParser is no workflow either
    parser = ConfigParser({"root": "$sasnet_components.utils.bundle.bundle_root('fallback')"}, globals=GLOBALS)
    assert parser.get_parsed_content("root") == "fallback"


def test_bundle_root_inside_a_workflow(tmp_path: Path, monkeypatch):
    from monai.bundle import ConfigWorkflow

    configs = tmp_path / "bundle" / "configs"
    configs.mkdir(parents=True)
    (configs / "metadata.json").write_text("{}")
    (configs / "train.yaml").write_text(
        "imports:\n  - $import sasnet_components\n  - $import sasnet_components.utils.bundle\n"
        "bundle_root: $sasnet_components.utils.bundle.bundle_root()\n"
        "seen: []\ninitialize:\n  - $@seen.append(@bundle_root)\nrun: []\nfinalize: []\n"
    )
    monkeypatch.chdir(tmp_path)  # any working directory: the root is the parent of the configs folder
    workflow = ConfigWorkflow(config_file=str(configs / "train.yaml"), workflow_type="train")
    workflow.initialize()
    assert workflow.parser.get_parsed_content("seen") == [str((tmp_path / "bundle").resolve())]


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), (False, False), ("false", False), ("False", False), ("true", True), ("YES", True), ("0", False), (1, True), ("off", False)],
)
def test_as_bool_reads_command_line_spellings(value, expected):
    from sasnet_components.utils import as_bool

    assert as_bool(value, "flag") is expected


def test_as_bool_rejects_other_values():
    from sasnet_components.utils import as_bool

    with pytest.raises(ValueError, match=r"`select_best` must be true or false .* got 'maybe'"):
        as_bool("maybe", "select_best")
