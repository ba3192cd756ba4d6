"""Export of the LA bundle's network through ``monai.bundle``: ``ckpt_export`` and ``verify_net_in_out``.

The exported TorchScript model must give the checkpoint's eval-mode output (the mean softmax
probability of the two decoders) and carry the bundle's metadata; ``verify_net_in_out`` must pass
with the bundle's ``metadata.json`` and fail when the metadata does not describe the network.
A small network (``n_filters`` 4) keeps it fast on CPU; the export path is the same for 16.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

from sasnet_components.networks.dual_branch_vnet import DualBranchVNet

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "la" / "configs"
TRAIN = str(CONFIGS / "train.yaml")
METADATA = str(CONFIGS / "metadata.json")
N_FILTERS = 4
SMALL = {"network_def#n_filters": N_FILTERS}


def _trained_like_network() -> DualBranchVNet:
    """A random network whose BatchNorm running statistics are not the identity (0 mean, 1 variance)."""
    torch.manual_seed(0)
    net = DualBranchVNet(n_filters=N_FILTERS)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(2, 1, 32, 32, 16) * 3.0 + 1.0)
    return net


def _load_eager(ckpt_file: Path) -> DualBranchVNet:
    net = DualBranchVNet(n_filters=N_FILTERS)
    net.load_state_dict(torch.load(ckpt_file, weights_only=True))
    return net.eval()


def _assert_same_output(ts_file: Path, eager: DualBranchVNet) -> None:
    scripted = torch.jit.load(str(ts_file))
    torch.manual_seed(1)
    for shape in [(1, 1, 32, 32, 16), (1, 1, 48, 32, 32)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = eager(x)
            actual = scripted(x)
        assert actual.shape == (1, 2, *shape[2:]) and actual.dtype == torch.float32
        torch.testing.assert_close(expected.sum(dim=1), torch.ones(1, *shape[2:]))  # probabilities
        assert (actual - expected).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A bundle folder laid out as ``python -m monai.bundle`` expects: configs/metadata.json, models/model.pt."""
    root = tmp_path_factory.mktemp("la_export")
    (root / "configs").mkdir()
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(Path(METADATA).read_text())
    net = _trained_like_network()
    bn = net.encoder.levels[0].convs[0].adn.N
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # the export must carry these
    # models/model.pt as the bundle's CheckpointSaver writes it: the network's plain state dict
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def test_ckpt_export_matches_checkpoint_and_embeds_metadata(bundle_dir, tmp_path):
    ckpt_file = bundle_dir / "models" / "model.pt"
    ts_file = tmp_path / "model.ts"
    ckpt_export(
        "network_def", filepath=str(ts_file), ckpt_file=str(ckpt_file), meta_file=METADATA, config_file=TRAIN, **SMALL
    )
    _assert_same_output(ts_file, _load_eager(ckpt_file))

    extra = {"metadata.json": "", "train.json": ""}
    torch.jit.load(str(ts_file), _extra_files=extra)
    metadata = json.loads(Path(METADATA).read_text())
    embedded = json.loads(extra["metadata.json"])
    assert embedded["version"] == metadata["version"] == "0.3.0"
    assert embedded["network_data_format"] == metadata["network_data_format"]
    assert json.loads(extra["train.json"]) == ConfigParser.load_config_file(TRAIN)  # the config, as JSON


def test_ckpt_export_of_a_training_checkpoint_with_key_in_ckpt(bundle_dir, tmp_path):
    # runs/checkpoints/*.pt hold {"model", "optimizer", "trainer", "sar"}: pick the weights with key_in_ckpt
    state = torch.load(bundle_dir / "models" / "model.pt", weights_only=True)
    nested = tmp_path / "checkpoint_final.pt"
    torch.save({"model": state, "sar": {"epoch": 3}}, nested)
    ts_file = tmp_path / "from_checkpoint.ts"
    ckpt_export(
        "network_def",
        filepath=str(ts_file),
        ckpt_file=str(nested),
        meta_file=METADATA,
        config_file=TRAIN,
        key_in_ckpt="model",
        **SMALL,
    )
    _assert_same_output(ts_file, _load_eager(bundle_dir / "models" / "model.pt"))


def test_ckpt_export_command_line(bundle_dir):
    # the command users type from the repository root, with --bundle_root giving the default
    # models/model.pt, models/model.ts and configs/metadata.json
    command = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--config_file", "bundles/la/configs/train.yaml",
        "--bundle_root", str(bundle_dir),
        "--network_def#n_filters", str(N_FILTERS),
    ]  # fmt: skip
    # `python -m` puts the working directory (the repository root) on sys.path: sasnet_components imports
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ts_file = bundle_dir / "models" / "model.ts"
    _assert_same_output(ts_file, _load_eager(bundle_dir / "models" / "model.pt"))
    extra = {"metadata.json": ""}
    torch.jit.load(str(ts_file), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads(Path(METADATA).read_text())["version"]


def test_verify_net_in_out_passes_with_the_bundle_metadata():
    # a (1, 1, 112, 112, 80) float32 input in eval mode -> 2 float32 channels, as metadata.json says
    verify_net_in_out("network_def", meta_file=METADATA, config_file=TRAIN, device="cpu", **SMALL)


def _metadata_copy(tmp_path: Path, **changes) -> str:
    metadata = json.loads(Path(METADATA).read_text())
    fmt = metadata["network_data_format"]
    fmt["outputs"]["pred"]["num_channels"] = changes.get("out_channels", 2)
    fmt["inputs"]["image"]["spatial_shape"] = changes.get("spatial_shape", [112, 112, 80])
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(metadata))
    return str(path)


def test_verify_net_in_out_fails_on_a_wrong_output_channel_count(tmp_path):
    meta_file = _metadata_copy(tmp_path, out_channels=3)
    with pytest.raises(ValueError, match=r"output channel number `2` doesn't match: `3`"):
        verify_net_in_out("network_def", meta_file=meta_file, config_file=TRAIN, device="cpu", **SMALL)


def test_verify_net_in_out_fails_on_a_spatial_shape_the_network_cannot_take(tmp_path):
    # 100 is not divisible by 16 (four stride-2 levels): the metadata's shape is what gets fed
    meta_file = _metadata_copy(tmp_path, spatial_shape=[100, 112, 80])
    with pytest.raises(ValueError, match=r"must be divisible by 16.*\(100, 112, 80\)"):
        verify_net_in_out("network_def", meta_file=meta_file, config_file=TRAIN, device="cpu", **SMALL)
