"""The LA bundle in MONAI Label: export, BundleInferTask without sasnet_components, a server answering
/infer, the app's trainer training on the datastore's labeled and unlabeled images, the app refusing
request values that monai.bundle would run as code, and the export never replacing a user's folder.

monailabel is installed as ``scripts/install.sh test`` does it (no torchvision); the app is made
from MONAI Label's own sample ``monaibundle`` app. A tiny random network (n_filters 4) on small
synthetic volumes keeps it on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
import yaml
from monai.bundle import run

from sasnet_components import SARFusion
from sasnet_components.utils import TORCHVISION_GUARD, export_monailabel_bundle, prepare_monailabel_app
from sasnet_components.utils.monailabel import EXPORT_MARKER, REQUEST_GUARD
from tests.bundle.test_la_export import _trained_like_network
from tests.bundle.test_la_inference import _rotated_affine

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "la"
NAME = "sasnet_la"
SMALL = {
    "network_def#n_filters": 4,
    "patch_size": [32, 32, 32],
    "batch_size": 2,
    "labeled_batch_size": 1,
    "num_workers": 0,
    "sw_batch_size": 2,
    "inference_spacing": [1.5, 1.5, 1.5],
}
SHAPE = (40, 36, 20)  # spacing (0.8, 1.1, 2.0) in _rotated_affine


def _write_image(path: Path, seed: int) -> np.ndarray:
    """Write a bright ellipsoid on noise (so that labels have both classes); return the ellipsoid mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    inside = ((grid / np.array([0.5, 0.6, 0.7])[:, None, None, None]) ** 2).sum(0) < 1
    data = (rng.normal(size=SHAPE) + 3.0 * inside).astype(np.float32)
    nib.save(nib.Nifti1Image(data, _rotated_affine()), str(path))
    return inside


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> dict:
    """An app with the exported bundle, and a LocalDatastore folder: 4 images, 2 of them labeled."""
    root = tmp_path_factory.mktemp("monailabel")
    ckpt = root / "model.pt"
    torch.save(_trained_like_network().state_dict(), ckpt)
    app_dir = prepare_monailabel_app(root / "app")
    bundle = export_monailabel_bundle(BUNDLE, ckpt, app_dir / "model" / NAME, **SMALL)
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for i in range(4):
        inside = _write_image(studies / f"case{i}.nii.gz", seed=i)
        if i < 2:
            nib.save(nib.Nifti1Image(inside.astype(np.uint8), _rotated_affine()), str(studies / "labels" / "final" / f"case{i}.nii.gz"))
    return {"root": root, "ckpt": ckpt, "app": app_dir, "bundle": bundle, "studies": studies}


def test_exported_bundle_layout(app):
    bundle = app["bundle"]
    assert (bundle / "models" / "model.ts").is_file()
    assert not (bundle / "models" / "model.pt").exists()  # else MONAI Label builds network_def (needs sasnet_components)
    for name in ("metadata.json", "inference.yaml", "train.yaml", "logging.conf"):
        assert (bundle / "configs" / name).is_file()
    infer = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    assert infer["imports"] == ["$import torch"]
    targets = [t["_target_"] for key in ("preprocessing", "postprocessing") for t in infer[key]["transforms"]]
    targets.append(infer["inferer"]["_target_"])
    assert not [t for t in targets if "sasnet" in t]
    assert infer["network_def"]["_target_"] == "sasnet_components.DualBranchVNet" and infer["network_def"]["n_filters"] == 4
    assert infer["patch_size"] == [32, 32, 32] and infer["inference_spacing"] == [1.5, 1.5, 1.5]
    train = yaml.safe_load((bundle / "configs" / "train.yaml").read_text())
    assert train["network_def"]["n_filters"] == 4 and train["inference_spacing"] == [1.5, 1.5, 1.5]
    assert train["train"]["dataset"] == {"data": []} and train["validate"]["dataset"]["data"] == []
    assert (bundle / EXPORT_MARKER).is_file()
    assert not list((bundle / "configs").glob("multi_gpu*"))  # so MONAI Label's torchrun route never runs it
    # the app's main.py is MONAI Label's sample monaibundle app between the torchvision and the request guard
    main = (app["app"] / "main.py").read_text()
    assert main.startswith(TORCHVISION_GUARD) and "class MyApp(MONAILabelApp)" in main
    assert main.index("class MyApp(MONAILabelApp)") < main.index(REQUEST_GUARD) < main.index('if __name__ == "__main__":')


def test_torchscript_matches_checkpoint(app):
    net = _trained_like_network().eval()
    net.load_state_dict(torch.load(app["ckpt"], weights_only=True))
    scripted = torch.jit.load(str(app["bundle"] / "models" / "model.ts"))
    x = torch.randn(1, 1, 48, 32, 32)
    with torch.no_grad():
        assert (scripted(x) - net(x)).abs().max().item() <= 1e-5


INFER_SCRIPT = r"""
import importlib.abc, json, sys

class _Block(importlib.abc.MetaPathFinder):  # this process must not use sasnet_components
    def find_spec(self, name, path=None, target=None):
        if name == "sasnet_components" or name.startswith("sasnet_components."):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, _Block())
exec(compile(sys.argv[3], "torchvision_guard", "exec"))
from monailabel.tasks.infer.bundle import BundleInferTask

task = BundleInferTask(sys.argv[1], {})
label_file, result = task({"image": sys.argv[2], "device": "cpu", "result_dtype": "uint8"})
ours = sorted(m for m in sys.modules if m.split(".")[0] == "sasnet_components")
print(json.dumps({"label": label_file, "labels": result["label_names"], "modules": ours}))
"""


def test_bundle_infer_task_needs_only_monai(app, tmp_path):
    image = app["studies"] / "case3.nii.gz"
    done = subprocess.run(
        [sys.executable, "-c", INFER_SCRIPT, str(app["bundle"]), str(image), TORCHVISION_GUARD],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] == [] and result["labels"] == {"left atrium": 1}
    written, source = nib.load(result["label"]), nib.load(str(image))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    monailabel_label = np.asarray(written.dataobj)
    assert set(np.unique(monailabel_label)) == {0, 1}

    # the same model through the bundle's own inference config (z-scored, as MONAI Label does) gives the same label
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    os.symlink(image, inputs / image.name)
    overrides = {k: v for k, v in SMALL.items() if k not in ("batch_size", "labeled_batch_size")}
    run(
        "run",
        config_file=[str(BUNDLE / "configs" / "train.yaml"), str(BUNDLE / "configs" / "inference.yaml")],
        input_dir=str(inputs), output_dir=str(outputs), inference_checkpoint=str(app["ckpt"]), intensity="zscore",
        device="cpu", amp=False, **overrides,
    )
    bundle_label = np.asarray(nib.load(str(outputs / "case3_seg.nii.gz")).dataobj)
    assert (bundle_label != monailabel_label).mean() < 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_answers_infer(app, tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MONAILABEL_PYEXE": sys.executable}
    command = [
        str(Path(sys.executable).parent / "monailabel"), "start_server", "--app", str(app["app"]), "--studies", str(app["studies"]),
        "--conf", "models", NAME, "--conf", "zoo_source", "ngc", "--conf", "sam2", "false",
        "--host", "127.0.0.1", "--port", str(port),
    ]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        info = None
        for _ in range(240):
            if server.poll() is not None:
                break
            try:
                info = requests.get(f"{url}/info/", timeout=5).json()
                break
            except requests.RequestException:
                time.sleep(0.5)
        assert info is not None, (tmp_path / "server.log").read_text()[-3000:]
        assert info["models"][NAME]["labels"] == {"left atrium": 1} and NAME in info["trainers"]
        assert info["datastore"]["total"] == 4 and info["datastore"]["completed"] == 2

        image = app["studies"] / "case2.nii.gz"
        with open(image, "rb") as f:
            response = requests.post(
                f"{url}/infer/{NAME}?output=image",
                files={"file": (image.name, f)},
                data={"params": json.dumps({"device": "cpu", "result_dtype": "uint8"})},
                timeout=300,
            )
        assert response.status_code == 200, (tmp_path / "server.log").read_text()[-3000:]
        (tmp_path / "answer.nii.gz").write_bytes(response.content)
        written, source = nib.load(str(tmp_path / "answer.nii.gz")), nib.load(str(image))
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def app_main(app):
    """The app's main.py, loaded as MONAI Label loads it; its MyApp builds main.BundleTrainTask / BundleInferTask."""
    exec(compile(TORCHVISION_GUARD, "torchvision_guard", "exec"), {})
    from monailabel.utils.others.class_utils import module_from_file

    return module_from_file("main", str(app["app"] / "main.py"))


def test_app_trainer_trains_on_labeled_and_unlabeled_images(app, app_main, tmp_path, monkeypatch):
    from monailabel.datastore.local import LocalDatastore

    batches = []  # (case id, labeled) of every sample the trainer fused
    fuse = SARFusion.fuse

    def recording_fuse(self, prob_low, prob_high, labeled, label=None, case_ids=None, **kwargs):
        batches.append([(c, bool(f)) for c, f in zip(case_ids, labeled)])
        return fuse(self, prob_low, prob_high, labeled, label, case_ids, **kwargs)

    monkeypatch.setattr(SARFusion, "fuse", recording_fuse)
    bundle = tmp_path / NAME  # a copy: training writes models/model.pt, which the other tests must not see
    shutil.copytree(app["bundle"], bundle)
    datastore = LocalDatastore(str(app["studies"]), extensions=["*.nii.gz"], auto_reload=False)
    assert len(datastore.datalist()) == 2  # MONAI Label passes only these
    task = app_main.BundleTrainTask(str(bundle), {})  # what the app's MyApp.init_trainers builds
    assert type(task).__name__ == "SASNetBundleTrainTask"
    task({"model": NAME, "max_epochs": 2, "val_split": 0, "device": "cpu"}, datastore)

    # 2 epochs x 2 iterations (one pass over the 2 labeled images), each batch 1 labeled + 1 unlabeled
    assert len(batches) == 4 and all([f for _, f in batch] == [True, False] for batch in batches)
    assert {c for batch in batches for c, f in batch if f} == {"case0", "case1"}
    assert {c for batch in batches for c, f in batch if not f} == {"case2", "case3"}  # the images without label
    assert (bundle / "models" / "model.pt").is_file()  # what MONAI Label serves next
    state = torch.load(bundle / "runs" / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4


def _code(marker: Path, result: str = "1") -> str:
    """A request value that, evaluated by monai.bundle, creates `marker`."""
    return f"$__import__('pathlib').Path({str(marker)!r}).touch() or {result}"


def test_server_train_route_refuses_a_max_epochs_that_runs_code(app, tmp_path):
    """The command MONAI Label's server runs for POST /train/<model> (monailabel.utils.async_tasks.utils)."""
    app_dir = prepare_monailabel_app(tmp_path / "app")
    shutil.copytree(app["bundle"], app_dir / "model" / NAME)
    marker = tmp_path / "marker"
    request = {"model": NAME, "max_epochs": _code(marker), "val_split": 0, "device": "cpu"}
    conf = {"models": NAME, "zoo_source": "ngc", "sam2": "false"}
    env = {**os.environ, "PYTHONPATH": str(REPO), "MONAI_LABEL_APP_CONF": json.dumps(conf)}
    env["MONAI_LABEL_DATASTORE_AUTO_RELOAD"] = "false"  # as the server sets it for training
    done = subprocess.run(
        [sys.executable, "-m", "monailabel.interfaces.utils.app", "-a", str(app_dir), "-s", str(app["studies"]),
         "-m", "train", "-r", json.dumps(request)],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path),
    )
    assert done.returncode != 0 and not marker.exists()
    assert "TypeError: MONAI Label training request refused: the request's max_epochs (train#trainer#max_epochs) must be " \
        "an int >= 1" in done.stderr, done.stderr[-3000:]
    assert not (app_dir / "model" / NAME / "models" / "model.pt").exists()  # nothing was trained


class _Datastore:
    """What BundleTrainTask reads from a datastore: the labeled image/label pairs."""

    def __init__(self, items: list):
        self.items = items

    def datalist(self) -> list:
        return self.items


def _pairs(studies: Path) -> list:
    labels = studies / "labels" / "final"
    return [{"image": str(studies / f"case{i}.nii.gz"), "label": str(labels / f"case{i}.nii.gz")} for i in (0, 1)]


@pytest.mark.parametrize(
    "request_changes, image, error, message",
    [
        ({"max_epochs": "CODE"}, None, TypeError, r"the request's max_epochs \(train#trainer#max_epochs\) must be an int >= 1"),
        ({"max_epochs": True}, None, TypeError, r"max_epochs \(train#trainer#max_epochs\) must be an int >= 1, got True"),
        ({"max_epochs": -1}, None, ValueError, r"max_epochs \(train#trainer#max_epochs\) must be an int >= 1, got -1"),
        ({"device": "CODE"}, None, ValueError, r"the request's device \(device\) must be a torch device name"),
        ({}, "CODE", ValueError, r"the datastore's labeled images \(train#dataset#data\[1\]\['image'\]\) must be a plain path"),
        ({"val_split": 0.5}, "CODE", ValueError, r"\(validate#dataset#data\[0\]\['image'\]\) must be a plain path"),
        ({"tracking": "mlflow", "tracking_uri": "CODE"}, None, KeyError, r"no override \['experiment_name', 'tracking', 'tracking_uri'\]"),
        ({"run_id": "training"}, None, ValueError, r"run_id must be one of \['run', ''\], got 'training'"),
        ({"model_filename": "ELSEWHERE"}, None, ValueError, r"\(train#handlers\) must be the bundle's own train#handlers"),
    ],
)
def test_app_trainer_refuses_values_that_monai_bundle_would_read_as_syntax(
    app, app_main, tmp_path, request_changes, image, error, message
):
    bundle = tmp_path / NAME  # a copy: an unchecked request would train and write models/model.pt
    shutil.copytree(app["bundle"], bundle)
    marker, elsewhere = tmp_path / "marker", tmp_path / "uploads" / "model.pt"
    elsewhere.parent.mkdir()
    torch.save({}, elsewhere)
    values = {"CODE": _code(marker), "ELSEWHERE": str(elsewhere)}
    pairs = _pairs(app["studies"])
    if image is not None:
        pairs[-1]["image"] = values[image]  # the last pair: the validation share when val_split is 0.5
    request = {"model": NAME, "max_epochs": 1, "val_split": 0, "device": "cpu"}
    request.update({k: values.get(v, v) if isinstance(v, str) else v for k, v in request_changes.items()})
    task = app_main.BundleTrainTask(str(bundle), {})
    with pytest.raises(error, match=rf"MONAI Label training request refused: .*{message}"):
        task(request, _Datastore(pairs))
    assert not marker.exists() and not (bundle / "models" / "model.pt").exists()


def test_app_trainer_refuses_code_on_the_multi_gpu_route_too(app, app_main, tmp_path):
    """force_multi_gpu takes MONAI Label's torchrun route once the bundle has a multi_gpu_train config (the export
    writes none, a user may add one): MONAI Label writes the overrides into monailabel_train.json for torchrun."""
    bundle = tmp_path / NAME
    shutil.copytree(app["bundle"], bundle)
    (bundle / "configs" / "multi_gpu_train.yaml").write_text("{}\n")
    marker = tmp_path / "marker"
    task = app_main.BundleTrainTask(str(bundle), {})
    request = {"model": NAME, "max_epochs": _code(marker), "val_split": 0, "device": "cpu", "force_multi_gpu": True}
    with pytest.raises(TypeError, match=r"MONAI Label training request refused: .*max_epochs"):
        task(request, _Datastore(_pairs(app["studies"])))
    assert not marker.exists() and not (bundle / "configs" / "monailabel_train.json").exists()
    assert not (bundle / "models" / "model.pt").exists()


def test_app_inferer_refuses_a_device_that_runs_code(app, app_main, tmp_path):
    marker = tmp_path / "marker"
    task = app_main.BundleInferTask(str(app["bundle"]), {})  # what the app's MyApp.init_infers builds
    request = {"image": str(app["studies"] / "case3.nii.gz"), "device": _code(marker, "'cpu'"), "result_dtype": "uint8"}
    with pytest.raises(ValueError, match=r"MONAI Label infer request refused: device \"\$__import__.* is not a torch device"):
        task(request)
    assert not marker.exists()


def test_app_inferer_writes_uint8_labels_unless_the_request_asks(app, app_main):
    task = app_main.BundleInferTask(str(app["bundle"]), {})  # what the app's MyApp.init_infers builds
    image = str(app["studies"] / "case3.nii.gz")
    written = []
    try:
        for request in ({}, {"result_dtype": "float32"}):
            label_file, _ = task({"image": image, "device": "cpu", **request})
            written.append(label_file)
        default, asked = (nib.load(f) for f in written)
        assert default.get_data_dtype() == np.uint8 and asked.get_data_dtype() == np.float32
        label = np.asarray(default.dataobj)
        assert label.shape == SHAPE and set(np.unique(label)) == {0, 1}  # background and left atrium
        np.testing.assert_array_equal(label, np.asarray(asked.dataobj))  # the same classes
    finally:
        for f in written:
            os.remove(f)


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_export_script_never_replaces_a_users_folder(app, tmp_path):
    script = str(REPO / "scripts" / "export_monailabel.py")
    user = tmp_path / "thesis"
    (user / "sub").mkdir(parents=True)
    (user / "thesis.txt").write_text("three years of work\n")
    (user / "sub" / "data.csv").write_text("case,dice\n1,0.91\n")
    own_bundle = tmp_path / "app" / "model" / NAME  # an app of this export whose bundle folder the user replaced
    shutil.copytree(app["app"], tmp_path / "app", ignore=shutil.ignore_patterns("model"))
    (own_bundle / "configs").mkdir(parents=True)
    (own_bundle / "configs" / "train.yaml").write_text("my own training\n")
    before = {"user": _snapshot(user), "app": _snapshot(tmp_path / "app")}
    for target, reason in (
        (["--output_dir", str(user)], f"output_dir '{user}' is not replaced and nothing in it is touched: it has no readable"),
        (["--app_dir", str(user)], f"app_dir '{user}' is not empty and has no main.py; choose a new folder."),
        (["--app_dir", str(tmp_path / "app")], f"output_dir '{own_bundle}' is not replaced and nothing in it is touched"),
    ):
        done = subprocess.run(
            [sys.executable, script, "--checkpoint", str(app["ckpt"]), *target, "--overwrite", "true", "--network_def#n_filters", "4"],
            capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 2, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"export_monailabel.py: error: {reason}"), last
    assert {"user": _snapshot(user), "app": _snapshot(tmp_path / "app")} == before


def test_export_script_command_line(app, tmp_path):
    script = str(REPO / "scripts" / "export_monailabel.py")
    out = tmp_path / "exported"
    done = subprocess.run(
        [sys.executable, script, "--checkpoint", str(app["ckpt"]), "--output_dir", str(out), "--network_def#n_filters", "4",
         "--patch_size", "[48,48,32]"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert yaml.safe_load((out / "configs" / "inference.yaml").read_text())["patch_size"] == [48, 48, 32]
    assert (out / "models" / "model.ts").is_file() and f"exported bundle: {out}" in done.stdout
    both = subprocess.run(
        [sys.executable, script, "--checkpoint", str(app["ckpt"]), "--output_dir", str(out), "--app_dir", str(tmp_path / "a")],
        capture_output=True, text=True, timeout=300,
    )
    assert both.returncode == 2 and "exactly one of --app_dir and --output_dir" in both.stderr.strip().splitlines()[-1]


def test_export_script_checks_the_checkpoint_before_making_any_folder(app, tmp_path):
    script = str(REPO / "scripts" / "export_monailabel.py")
    for checkpoint, reason in (
        (tmp_path / "nowhere.pt", f"`checkpoint` '{tmp_path / 'nowhere.pt'}' does not exist; expected a checkpoint file."),
        (app["ckpt"], f"`checkpoint` '{app['ckpt']}': its weights do not fit the configured network: "),  # 4 filters, not 16
    ):
        done = subprocess.run([sys.executable, script, "--checkpoint", str(checkpoint), "--app_dir", str(tmp_path / "apps" / "s")],
                              capture_output=True, text=True, timeout=300)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and last.startswith(f"export_monailabel.py: error: {reason}"), last
        assert "demo_output/models/model.pt" in last  # how to get one
        assert not (tmp_path / "apps").exists()
