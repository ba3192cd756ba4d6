"""Tests of the bundle helpers: config checks, the validation plan, training stats and ``bundle_root``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from sasnet_components.data.sliding_window import overlap_for_stride
from sasnet_components.utils.bundle import (
    TrainingSettings,
    bundle_root,
    check_config_keys,
    check_training_settings,
    log_validation_plan,
    training_stats,
)

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


def test_training_stats_reports_the_terms_present():
    # a trainer without PLC (use_plc=False) has no loss_plc in its output
    stats = training_stats({"loss": 1.0, "loss_seg": 2.0, "loss_src": 4.0, "gamma": 0.5})
    assert stats == {"loss": 1.0, "loss_seg": 2.0, "loss_src": 4.0, "gamma": 0.5}


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


# ---------------------------------------------------------------------- check_training_settings
REFERENCE = dict(
    protocol="default",
    num_labeled=16,
    max_iterations=40000,
    batch_size=4,
    labeled_batch_size=2,
    patch_size=[112, 112, 80],
    learning_rate=0.01,
    momentum=0.9,
    weight_decay=1e-4,
    beta=0.5,
    consistency=1.0,
    rampup_length=40,
    rampup_interval=150,
    seed=1337,
    val_interval=50,
    val_start=100,
    val_stride=[18, 18, 4],
    val_overlap=0.5,
    checkpoint_interval=1000,
    log_interval=20,
    flags={"select_best": "false", "amp": True, "pad_to_patch": "yes"},
)


def test_reference_settings_pass():
    assert check_training_settings(**REFERENCE) is True
    assert check_training_settings(**{**REFERENCE, "val_stride": None, "protocol": "paper"}) is True
    assert check_training_settings(**{**REFERENCE, "num_labeled": None}) is True  # the datalist's split
    assert check_training_settings(**{**REFERENCE, "num_labeled": "all"}) is True  # every labeled case outside validation


@pytest.mark.parametrize(
    "change, message",
    [
        ({"patch_size": [100, 112, 80]}, "`patch_size` must list one size per spatial axis, each a multiple of 16 (the network halves the patch four times), e.g. [112, 112, 80]; got [100, 112, 80]."),
        ({"patch_size": "112"}, "each a multiple of 16"),
        ({"max_iterations": 0}, "`max_iterations` (training iterations) must be an integer >= 1, got 0."),
        ({"max_iterations": "abc"}, "`max_iterations` (training iterations) must be an integer >= 1, got 'abc'."),
        ({"labeled_batch_size": 5}, "`labeled_batch_size` (labeled samples per batch) must be an integer in [1, batch_size], got 5 with batch_size 4."),
        ({"num_labeled": 1}, "`num_labeled` (1) must be at least `labeled_batch_size` (2)"),
        ({"num_labeled": 0}, "`num_labeled` (labeled training cases) must be an integer >= 1 or 'all', got 0."),
        ({"val_interval": 0}, "`val_interval` (iterations between validations) must be an integer >= 1, got 0."),
        ({"val_stride": [18, 18, 90]}, "`val_stride` must be null or one integer in [1, patch size] per axis of [112, 112, 80], got [18, 18, 90]."),
        ({"val_overlap": 1.5}, "`val_overlap` (sliding-window overlap) must be a number in [0, 1), got 1.5."),
        ({"checkpoint_interval": -5}, "`checkpoint_interval` (iterations between training checkpoints) must be an integer >= 1, got -5."),
        ({"log_interval": 2.5}, "`log_interval` (iterations between loss log lines) must be an integer >= 1, got 2.5."),
        ({"learning_rate": 0}, "`learning_rate` (SGD step size) must be a number in (0, inf), got 0."),
        ({"momentum": 1.0}, "`momentum` (SGD momentum) must be a number in [0, 1), got 1.0."),
        ({"seed": -1}, "`seed` (random seed) must be an integer >= 0, got -1."),
        ({"protocol": "papers"}, "`protocol` must be one of ['default', 'paper'], got 'papers'."),
        ({"flags": {"amp": "maybe"}}, "`amp` must be true or false (also yes/no, on/off, 1/0), got 'maybe'."),
    ],
)
def test_each_bad_setting_is_named(change, message):
    with pytest.raises(ValueError) as info:
        check_training_settings(**{**REFERENCE, **change})
    assert message in str(info.value)
    assert str(info.value).count("\n  - ") == 1  # only that one


def test_all_bad_settings_in_one_message():
    with pytest.raises(ValueError) as info:
        check_training_settings(**{**REFERENCE, "max_iterations": 0, "batch_size": True, "beta": -1})
    text = str(info.value)
    assert text.startswith("invalid training settings:\n  - ")
    assert "`max_iterations`" in text and "`batch_size` (samples per batch) must be an integer >= 1, got True" in text
    assert "`beta` (weight of the supervised loss) must be a number in [0, inf), got -1." in text


# ---------------------------------------------------------------------- log_validation_plan
def test_paper_plan_is_a_warning_naming_test_cases_schedule_and_window(caplog):
    with caplog.at_level("INFO", logger="sasnet_components.utils.bundle"):
        message = log_validation_plan(
            "paper", 20, 50, 100, [112, 112, 80], overlap_for_stride([112, 112, 80], [18, 18, 4]), True
        )
    assert caplog.records[-1].levelname == "WARNING"
    assert message == (
        "protocol 'paper': validating every 50 iterations from iteration 100 on 20 TEST cases (sliding window "
        "112x112x80, stride 18/18/4, uniform weights, float32) and keeping the best model, as the reference code "
        "did; for comparison with published numbers only, not an honest estimate."
    )


def test_paper_plan_says_where_it_differs_from_the_reference():
    message = log_validation_plan("paper", 20, 1000, 1000, [112, 112, 80], 0.5, True, mode="gaussian", amp=True)
    assert "stride 56/56/40, gaussian weights, mixed precision" in message  # int(112 * 0.5), int(80 * 0.5)
    assert message.endswith(
        "in {'interval': 1000, 'start': 1000, 'stride': [56, 56, 40], 'mode': 'gaussian', 'amp': True}."
    )


def test_default_plan_is_information(caplog):
    with caplog.at_level("INFO", logger="sasnet_components.utils.bundle"):
        message = log_validation_plan("default", 8, 1000, 1000, [112, 112, 80], 0.5, False)
    assert caplog.records[-1].levelname == "INFO"
    assert message == (
        "protocol 'default': validating every 1000 iterations from iteration 1000 on 8 validation cases (sliding "
        "window 112x112x80, stride 56/56/40, uniform weights, float32); the final model is reported."
    )
    assert log_validation_plan("default", 0, 1000, 1000, [112, 112, 80], 0.5, False).startswith(
        "protocol 'default': no validation cases"
    )


# ---------------------------------------------------------------------- TrainingSettings
def test_training_settings_check_and_round_trip():
    with pytest.raises(ValueError, match="`max_iterations`"):
        TrainingSettings(**{**REFERENCE, "max_iterations": 0})
    settings = TrainingSettings(others={"alpha": 0.5, "views": ((0, 1, 2), (1, 0, 2))}, **REFERENCE)
    state = settings.state_dict()["settings"]
    assert state["flags#select_best"] is False and state["flags#pad_to_patch"] is True  # as booleans
    assert state["views"] == [[0, 1, 2], [1, 0, 2]] and state["alpha"] == 0.5
    assert "max_iterations" not in state and "val_interval" not in state  # may change on resume


def test_training_settings_warn_about_each_difference_on_resume(caplog):
    saved = TrainingSettings(others={"alpha": 0.5}, **REFERENCE).state_dict()
    longer = TrainingSettings(others={"alpha": 0.5}, **{**REFERENCE, "max_iterations": 80000, "log_interval": 1})
    with caplog.at_level("WARNING", logger="sasnet_components.utils.bundle"):
        longer.load_state_dict(saved)  # a longer run: nothing to say
        assert not caplog.records
        TrainingSettings(others={"alpha": 0.25}, **{**REFERENCE, "learning_rate": 0.001}).load_state_dict(saved)
    assert caplog.records[-1].getMessage().startswith(
        "resuming with settings that differ from the checkpoint's: alpha 0.25 (checkpoint: 0.5); "
        "learning_rate 0.001 (checkpoint: 0.01); the run does not continue the saved one exactly"
    )


def test_settings_recorded_later_count_as_every_run_had_them(caplog):
    before = TrainingSettings(others={"alpha": 0.5}, **REFERENCE).state_dict()  # a checkpoint without `processes`
    single = TrainingSettings(others={"alpha": 0.5, "processes": 1}, **REFERENCE)
    multi = TrainingSettings(others={"alpha": 0.5, "processes": 2, "sync_batchnorm": True}, **REFERENCE)
    with caplog.at_level("WARNING", logger="sasnet_components.utils.bundle"):
        single.load_state_dict(before)  # one process, as every earlier run
        assert not caplog.records
        multi.load_state_dict(single.state_dict())
    assert "processes 2 (checkpoint: 1); sync_batchnorm True (checkpoint: False)" in caplog.records[-1].getMessage()
