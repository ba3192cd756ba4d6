"""MONAI Label export helpers: TorchScript weights into an eager network, bad export requests, the app folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sasnet_components import DualBranchVNet
from sasnet_components.utils import TORCHVISION_GUARD, export_monailabel_bundle, load_torchscript_weights, prepare_monailabel_app

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


def test_export_replaces_only_on_request(checkpoint, tmp_path):
    out = tmp_path / "app" / "model" / "sasnet_la"
    export_monailabel_bundle(BUNDLE, checkpoint, out, **SMALL)
    (out / "stale.txt").write_text("from an earlier export")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_monailabel_bundle(BUNDLE, checkpoint, out, **SMALL)
    assert (out / "stale.txt").exists()
    export_monailabel_bundle(BUNDLE, checkpoint, out, overwrite=True, **SMALL)
    assert not (out / "stale.txt").exists() and (out / "models" / "model.ts").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["sasnet_la"]  # no temporary folders left


def test_export_refuses_bad_requests(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="must be outside the bundle"):
        export_monailabel_bundle(BUNDLE, checkpoint, BUNDLE / "exported", **SMALL)
    with pytest.raises(ValueError, match="must not contain the checkpoint"):
        export_monailabel_bundle(BUNDLE, checkpoint, checkpoint.parent, overwrite=True, **SMALL)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        export_monailabel_bundle(BUNDLE, tmp_path / "missing.pt", tmp_path / "out", **SMALL)
    with pytest.raises(KeyError, match="n_filter"):
        export_monailabel_bundle(BUNDLE, checkpoint, tmp_path / "out", n_filter=2)
    with pytest.raises(RuntimeError, match="does not fit the bundle's network_def"):
        export_monailabel_bundle(BUNDLE, checkpoint, tmp_path / "out", **{"network_def#n_filters": 4})
    assert not (tmp_path / "out").exists()
    assert not (BUNDLE / "exported").exists()


def test_prepare_app_puts_the_guard_first(tmp_path):
    sample = tmp_path / "sample"
    (sample / "lib").mkdir(parents=True)
    (sample / "main.py").write_text("print('sample app')\n")
    (sample / "lib" / "__init__.py").write_text("")
    app = prepare_monailabel_app(tmp_path / "apps" / "sasnet", sample_app=sample)
    assert (app / "main.py").read_text() == TORCHVISION_GUARD + "\nprint('sample app')\n"
    assert (app / "lib" / "__init__.py").is_file()
    (app / "main.py").write_text("edited by the user\n")
    assert prepare_monailabel_app(app, sample_app=sample) == app  # an existing app is left as it is
    assert (app / "main.py").read_text() == "edited by the user\n"

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "data.txt").write_text("")
    with pytest.raises(FileExistsError, match="no main.py"):
        prepare_monailabel_app(tmp_path / "busy", sample_app=sample)
    with pytest.raises(FileNotFoundError, match="monaibundle"):
        prepare_monailabel_app(tmp_path / "new", sample_app=tmp_path / "nowhere")
