"""MONAI Label export helpers: TorchScript weights into an eager network, bad export requests, what an
overwrite may replace, the app folder, and the check of MONAI Label's training overrides."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from sasnet_components import DualBranchVNet
from sasnet_components.utils import (
    TORCHVISION_GUARD,
    InvalidInputError,
    export_monailabel_bundle,
    load_torchscript_weights,
    prepare_monailabel_app,
)
from sasnet_components.utils.monailabel import EXPORT_MARKER, REQUEST_GUARD, check_monailabel_overrides

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "la"
SMALL = {"network_def#n_filters": 2}


def _scripted(tmp_path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(DualBranchVNet(n_filters=2).eval()), str(path))
    return path


def test_load_torchscript_weights_gives_the_same_network(tmp_path):
    path = _scripted(tmp_path, seed=0)
    torch.manual_seed(1)
    net = DualBranchVNet(n_filters=2).eval()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        before = net(x)
        assert load_torchscript_weights(net, path) is True
        after = net(x)
        expected = torch.jit.load(str(path))(x)
    assert (before - expected).abs().max() > 1e-3  # different seeds: the load changed something
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-6)


def test_load_torchscript_weights_missing_and_mismatched(tmp_path):
    net = DualBranchVNet(n_filters=2)
    assert load_torchscript_weights(net, tmp_path / "none.ts", missing_ok=True) is False
    with pytest.raises(FileNotFoundError, match="none.ts"):
        load_torchscript_weights(net, tmp_path / "none.ts")
    path = _scripted(tmp_path, seed=0)
    with pytest.raises(RuntimeError, match="do not fit the network"):
        load_torchscript_weights(DualBranchVNet(n_filters=4), path)


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "ckpt" / "model.pt"
    path.parent.mkdir()
    torch.save({"model": DualBranchVNet(n_filters=2).state_dict()}, path)  # a training checkpoint's layout
    return path


def _snapshot(folder: Path) -> dict:
    """Relative path -> bytes (files) or link target (links) of everything below `folder`."""
    return {
        p.relative_to(folder).as_posix(): os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def test_export_marker_lists_every_file_it_wrote(checkpoint, tmp_path):
    out = export_monailabel_bundle(BUNDLE, checkpoint, tmp_path / "sasnet_la", **SMALL)
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker["written_by"].startswith("sasnet_components.utils.export_monailabel_bundle")
    assert marker["checkpoint"] == str(checkpoint) and marker["bundle"] == str(BUNDLE)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != EXPORT_MARKER)
    assert sorted(marker["files"]) == written
    assert "models/model.ts" in written and "configs/train.yaml" in written
    for name, digest in marker["files"].items():
        assert digest == hashlib.sha256((out / name).read_bytes()).hexdigest()


def test_overwrite_replaces_an_earlier_export_only_on_request(checkpoint, tmp_path):
    out = tmp_path / "app" / "model" / "sasnet_la"
    export_monailabel_bundle(BUNDLE, checkpoint, out, **SMALL)
    first = (out / "models" / "model.ts").read_bytes()
    torch.manual_seed(1)
    torch.save({"model": DualBranchVNet(n_filters=2).state_dict()}, checkpoint)  # other weights, same path
    with pytest.raises(FileExistsError, match="holds an earlier export; pass overwrite=True"):
        export_monailabel_bundle(BUNDLE, checkpoint, out, **SMALL)
    assert (out / "models" / "model.ts").read_bytes() == first
    export_monailabel_bundle(BUNDLE, checkpoint, out, overwrite=True, **SMALL)
    assert (out / "models" / "model.ts").read_bytes() != first
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker["files"]["models/model.ts"] == hashlib.sha256((out / "models" / "model.ts").read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["sasnet_la"]  # no temporary folders left


def test_failed_replacement_puts_the_earlier_export_back(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "app" / "model" / "sasnet_la"
    export_monailabel_bundle(BUNDLE, checkpoint, out, **SMALL)
    before = _snapshot(out)
    real_replace, moves = os.replace, []

    def replace(src, dst):  # the earlier export moves aside, then the new one fails to move in
        moves.append(Path(dst).name)
        if len(moves) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        export_monailabel_bundle(BUNDLE, checkpoint, out, overwrite=True, **SMALL)
    monkeypatch.undo()
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["sasnet_la"]  # neither the new nor the aside folder left


def test_overwrite_refuses_a_users_folder(checkpoint, tmp_path):
    user = tmp_path / "thesis"
    (user / "sub").mkdir(parents=True)
    (user / "thesis.txt").write_text("three years of work\n")
    (user / "sub" / "data.csv").write_text("case,dice\n1,0.91\n")
    before = _snapshot(user)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=rf"{re.escape(str(user))}.* is not replaced .*no readable {EXPORT_MARKER}"):
            export_monailabel_bundle(BUNDLE, checkpoint, user, overwrite=overwrite, **SMALL)
    assert _snapshot(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "thesis"]  # no temporary folders left


def _add_file(folder: Path, name: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("the user's")


def _edit_config(folder: Path, name: str) -> None:
    with open(folder / name, "a") as f:
        f.write("# tuned by hand\n")


@pytest.mark.parametrize(
    "change, name, reason",
    [
        (_add_file, "notes.txt", r"holds files the export did not write: \['notes.txt'\]"),
        (_add_file, "models/model.pt", r"did not write: \['models/model.pt'\]"),  # what MONAI Label's training writes
        (_add_file, "runs/checkpoints/checkpoint_final.pt", r"did not write: \['runs/checkpoints/checkpoint_final.pt'\]"),
        (_edit_config, "configs/train.yaml", r"files changed since the export: \['configs/train.yaml'\]"),
        (lambda folder, name: (folder / name).symlink_to("/"), "root", r"did not write: \['root'\]"),
    ],
)
def test_overwrite_refuses_an_export_with_other_or_changed_files(checkpoint, tmp_path, change, name, reason):
    out = export_monailabel_bundle(BUNDLE, checkpoint, tmp_path / "sasnet_la", **SMALL)
    change(out, name)
    before = _snapshot(out)
    with pytest.raises(FileExistsError, match=reason):
        export_monailabel_bundle(BUNDLE, checkpoint, out, overwrite=True, **SMALL)
    assert _snapshot(out) == before


def test_overwrite_refuses_a_copied_marker_next_to_user_files(checkpoint, tmp_path):
    out = export_monailabel_bundle(BUNDLE, checkpoint, tmp_path / "sasnet_la", **SMALL)
    user = tmp_path / "user"
    user.mkdir()
    (user / EXPORT_MARKER).write_bytes((out / EXPORT_MARKER).read_bytes())
    (user / "thesis.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"did not write: \['thesis.txt'\]"):
        export_monailabel_bundle(BUNDLE, checkpoint, user, overwrite=True, **SMALL)
    (user / "thesis.txt").unlink()  # a marker alone, with the files it lists missing, is what is left of an export
    (user / EXPORT_MARKER).write_text(json.dumps({"written_by": "someone else", "files": {}}))
    with pytest.raises(FileExistsError, match="was not written by sasnet_components"):
        export_monailabel_bundle(BUNDLE, checkpoint, user, overwrite=True, **SMALL)
    assert sorted(p.name for p in user.iterdir()) == [EXPORT_MARKER]


def test_export_refuses_bad_requests(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="must be outside the bundle"):
        export_monailabel_bundle(BUNDLE, checkpoint, BUNDLE / "exported", **SMALL)
    with pytest.raises(ValueError, match="must not contain the checkpoint"):
        export_monailabel_bundle(BUNDLE, checkpoint, checkpoint.parent, overwrite=True, **SMALL)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        export_monailabel_bundle(BUNDLE, tmp_path / "missing.pt", tmp_path / "out", **SMALL)
    with pytest.raises(KeyError, match="n_filter"):
        export_monailabel_bundle(BUNDLE, checkpoint, tmp_path / "out", n_filter=2)
    with pytest.raises(InvalidInputError, match=r"its weights do not fit the configured network: .* has shape \(2, 1, 3, 3, 3\) in the checkpoint and \(4, 1, 3, 3, 3\)"):
        export_monailabel_bundle(BUNDLE, checkpoint, tmp_path / "out", **{"network_def#n_filters": 4})
    assert not (tmp_path / "out").exists()
    assert not (BUNDLE / "exported").exists()


SAMPLE_MAIN = 'class MyApp:\n    pass\n\n\nif __name__ == "__main__":\n    main()\n'


def test_prepare_app_puts_the_guards_into_main(tmp_path):
    sample = tmp_path / "sample"
    (sample / "lib").mkdir(parents=True)
    (sample / "main.py").write_text(SAMPLE_MAIN)
    (sample / "lib" / "__init__.py").write_text("")
    app = prepare_monailabel_app(tmp_path / "apps" / "sasnet", sample_app=sample)
    expected = f'{TORCHVISION_GUARD}\nclass MyApp:\n    pass\n\n\n{REQUEST_GUARD}\n\nif __name__ == "__main__":\n    main()\n'
    assert (app / "main.py").read_text() == expected
    assert (app / "lib" / "__init__.py").is_file()
    (app / "main.py").write_text((app / "main.py").read_text() + "# edited by the user\n")
    (app / "thesis.txt").write_text("mine")
    assert prepare_monailabel_app(app, sample_app=sample) == app  # an app with the guard is used as it is
    assert (app / "main.py").read_text() == expected + "# edited by the user\n" and (app / "thesis.txt").read_text() == "mine"


def test_prepare_app_refuses_a_main_without_the_request_guard(tmp_path):
    app = tmp_path / "my_app"
    app.mkdir()
    (app / "main.py").write_text(TORCHVISION_GUARD + "\n" + SAMPLE_MAIN)  # e.g. exported before the request guard
    with pytest.raises(FileExistsError, match=r"my_app.* has a main.py without the request guard"):
        prepare_monailabel_app(app, sample_app=tmp_path / "nowhere")
    assert (app / "main.py").read_text() == TORCHVISION_GUARD + "\n" + SAMPLE_MAIN


def test_prepare_app_refuses_bad_folders(tmp_path):
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "main.py").write_text(SAMPLE_MAIN)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "data.txt").write_text("")
    with pytest.raises(FileExistsError, match="no main.py"):
        prepare_monailabel_app(tmp_path / "busy", sample_app=sample)
    with pytest.raises(FileNotFoundError, match="monaibundle"):
        prepare_monailabel_app(tmp_path / "new", sample_app=tmp_path / "nowhere")


HANDLERS = [{"_target_": "StatsHandler", "tag_name": "train", "output_transform": "$lambda x: None"}]
CODE = "$__import__('os').system('touch /tmp/pwned') or 1"


@pytest.fixture()
def bundle_dir(tmp_path) -> Path:
    """An exported bundle as check_monailabel_overrides reads it: configs/train.yaml with train#handlers, models/."""
    (tmp_path / "b" / "configs").mkdir(parents=True)
    (tmp_path / "b" / "models").mkdir()
    (tmp_path / "b" / "configs" / "train.yaml").write_text(yaml.safe_dump({"train": {"handlers": HANDLERS}}))
    return tmp_path / "b"


def _overrides(bundle: Path) -> dict:
    """What BundleTrainTask passes for {"max_epochs": 2, "val_split": 0.5, "device": "cpu"} on 2 labeled images."""
    pair = {"image": "/data/studies/case0.nii.gz", "label": "/data/studies/labels/final/case0.nii.gz"}
    loader = {
        "_target_": "CheckpointLoader",
        "load_path": str(bundle / "models" / "model.pt"),
        "load_dict": {"model": "$@network"},
        "strict": False,
    }
    return {
        "bundle_root": str(bundle),
        "train#trainer#max_epochs": 2,
        "train#dataset#data": [pair],
        "device": "cpu",
        "train#handlers": [loader, *HANDLERS],
        "validate#dataset#data": [{"image": "/data/studies/case1.nii.gz", "label": "/data/studies/labels/final/case1.nii.gz"}],
    }


def test_check_monailabel_overrides_accepts_what_monailabel_sends(bundle_dir):
    overrides = _overrides(bundle_dir)
    assert check_monailabel_overrides(overrides, bundle_dir) is None
    assert check_monailabel_overrides(overrides, bundle_dir, run_id="") is None  # MONAI Label's option default
    plain = {
        **overrides,
        "device": "cuda:1",
        "train#handlers": HANDLERS,  # pretrained but no models/model.pt yet: no loader
        "validate#dataset#data": [],  # val_split 0
        "train#dataset#data": [{"image": "/data/$scan@home.nii.gz", "label": "/data/a%b.nii.gz"}],  # '$' later on is plain
    }
    assert check_monailabel_overrides(plain, bundle_dir) is None


def _set(key, value):
    return lambda overrides: {**overrides, key: value}


def _set_image(key, value):
    return lambda overrides: {**overrides, key: [{**overrides[key][0], "image": value}]}


MAX_EPOCHS, TRAIN, VALIDATE = "train#trainer#max_epochs", "train#dataset#data", "validate#dataset#data"
PLAIN_PATH = r"\]\) must be a plain path"


@pytest.mark.parametrize(
    "change, error, message",
    [
        (_set(MAX_EPOCHS, CODE), TypeError, r"the request's max_epochs \(train#trainer#max_epochs\) must be an int >= 1, got \"\$__im"),
        (_set(MAX_EPOCHS, "2"), TypeError, r"max_epochs \(train#trainer#max_epochs\) must be an int >= 1, got '2'"),
        (_set(MAX_EPOCHS, 2.0), TypeError, r"must be an int >= 1, got 2.0"),
        (_set(MAX_EPOCHS, True), TypeError, r"must be an int >= 1, got True"),
        (_set(MAX_EPOCHS, -3), ValueError, r"must be an int >= 1, got -3"),
        (_set(MAX_EPOCHS, 0), ValueError, r"must be an int >= 1, got 0"),
        (_set("device", "$torch.device('cpu')"), ValueError, r"the request's device \(device\) must be a torch device name"),
        (_set("device", "@network_def"), ValueError, r"\(device\) must be a torch device name .*got '@network_def'"),
        (_set("device", ["cpu"]), TypeError, r"\(device\) must be a torch device name"),
        (_set_image(TRAIN, CODE), ValueError, r"\(train#dataset#data\[0\]\['image'" + PLAIN_PATH),
        (_set_image(TRAIN, "%/data/evil.yaml#training"), ValueError, r"train#dataset#data\[0\]\['image'" + PLAIN_PATH),
        (_set_image(TRAIN, "@train#handlers"), ValueError, PLAIN_PATH),
        (_set_image(TRAIN, "/data/a@#b.nii.gz"), ValueError, PLAIN_PATH + r" .*got '/data/a@#b.nii.gz'"),
        (_set_image(VALIDATE, "/data/x%::y.nii.gz"), ValueError, r"\(validate#dataset#data\[0\]\['image'" + PLAIN_PATH),
        (_set_image(TRAIN, {"_target_": "subprocess.run", "args": ["touch", "/tmp/x"]}), TypeError, r"'image'\]\) must be a path string"),
        (_set_image(TRAIN, ""), ValueError, PLAIN_PATH),
        (_set(TRAIN, [{"image": "/a.nii", "label": "/b.nii", "_target_": "os.system"}]), ValueError, r"\[0\]\) must be a dict with exactly"),
        (_set(TRAIN, [["/a.nii", "/b.nii"]]), TypeError, r"\(train#dataset#data\[0\]\) must be a dict"),
        (_set(VALIDATE, "$@train#dataset#data"), TypeError, r"\(validate#dataset#data\) must be a list"),
        (_set("bundle_root", "$__import__('os').getcwd()"), ValueError, r"the bundle folder \(bundle_root\) must be a plain path"),
    ],
)
def test_check_monailabel_overrides_refuses_values_monai_bundle_would_read_as_syntax(bundle_dir, change, error, message):
    with pytest.raises(error, match=rf"^MONAI Label training request refused: .*{message}"):
        check_monailabel_overrides(change(_overrides(bundle_dir)), bundle_dir)


def _loader(**changes):
    def change(overrides):
        loader, *rest = overrides["train#handlers"]
        return {**overrides, "train#handlers": [{**loader, **changes}, *rest]}

    return change


@pytest.mark.parametrize(
    "change",
    [
        _loader(load_path="/tmp/uploaded/model.pt"),  # model_filename pointing outside <bundle>/models
        _loader(load_path="$@bundle_root + '/models/model.pt'"),
        _loader(load_dict={"model": CODE}),
        _loader(strict="$True"),
        _set("train#handlers", [*HANDLERS, {"_target_": "MLFlowHandler", "tracking_uri": CODE}]),
        _set("train#handlers", []),
    ],
)
def test_check_monailabel_overrides_accepts_only_the_bundles_handlers_and_monailabels_loader(bundle_dir, change):
    with pytest.raises(ValueError, match=r"\(train#handlers\) must be the bundle's own train#handlers, optionally after"):
        check_monailabel_overrides(change(_overrides(bundle_dir)), bundle_dir)


def test_check_monailabel_overrides_refuses_tracking_and_other_run_ids(bundle_dir):
    overrides = _overrides(bundle_dir)
    for key in ("tracking", "tracking_uri", "experiment_name", "run_name", "displayable_configs"):
        with pytest.raises(KeyError, match=rf"accepts no override \['{key}'\]"):
            check_monailabel_overrides({**overrides, key: "mlflow"}, bundle_dir)
    for run_id in ("training", "initialize", "--args_file=/tmp/evil.json", None):
        with pytest.raises(ValueError, match=rf"run_id must be one of \['run', ''\], got {re.escape(repr(run_id))}"):
            check_monailabel_overrides(overrides, bundle_dir, run_id=run_id)
