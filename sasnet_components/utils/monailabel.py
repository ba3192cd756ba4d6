"""Export of a trained SASNet bundle for MONAI Label's ``monaibundle`` app.

The exported folder is what MONAI Label expects under ``<app>/model/<name>``: ``configs/metadata.json``,
``configs/inference.yaml`` (MONAI transforms only), ``configs/train.yaml`` (semi-supervised training
on the datastore, needs this package), ``models/model.ts`` and no ``models/model.pt`` (MONAI Label
instantiates ``network_def`` whenever ``model.pt`` exists, which would need this package for
inference too). See ``bundles/la/docs/monailabel.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata

from .bundle import check_config_keys
from .io import current_umask

__all__ = [
    "MONAILABEL_INFERENCE_KEYS",
    "TORCHVISION_GUARD",
    "export_monailabel_bundle",
    "load_torchscript_weights",
    "prepare_monailabel_app",
]

PathLike = Union[str, os.PathLike]

# key of configs/monailabel/inference.yaml -> key of the bundle's train.yaml / inference.yaml it copies
MONAILABEL_INFERENCE_KEYS = {
    "num_classes": "num_classes",
    "patch_size": "patch_size",
    "inference_spacing": "inference_spacing",
    "inference_axcodes": "inference_axcodes",
    "inference_overlap": "inference_overlap",
    "inference_mode": "inference_mode",
    "sw_batch_size": "inference_sw_batch_size",
}

# MONAI Label 0.8.5 imports torchvision when its bundle tasks are imported (monailabel/transform/post.py),
# for 2D debug image writers that 3D bundles never call. Installed without torchvision (to keep a
# CPU torch), the app's main.py starts with this guard.
TORCHVISION_GUARD = '''\
# --- torchvision guard (scripts/export_monailabel.py) -------------------------------------------------
# MONAI Label imports torchvision.utils in monailabel/transform/post.py for 2D debug writers only. Without
# a working torchvision, bind those names to a function that raises, then let monai's optional imports see
# torchvision as absent again.
import sys as _sys
import types as _types

try:
    import torchvision.utils  # noqa: F401
except Exception:  # not installed, or a build that does not match torch
    for _name in [n for n in _sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del _sys.modules[_name]
    _tv, _tvu = _types.ModuleType("torchvision"), _types.ModuleType("torchvision.utils")

    def _torchvision_unavailable(*args, **kwargs):
        raise RuntimeError("torchvision is not installed; MONAI Label's 2D debug image writers need it.")

    _tvu.make_grid = _tvu.save_image = _torchvision_unavailable
    _tv.utils = _tvu
    _sys.modules["torchvision"], _sys.modules["torchvision.utils"] = _tv, _tvu
    import monailabel.transform.post  # noqa: F401,E402  (binds the names above once)

    del _sys.modules["torchvision"], _sys.modules["torchvision.utils"]
# ------------------------------------------------------------------------------------------------------
'''


def load_torchscript_weights(network: torch.nn.Module, path: PathLike, missing_ok: bool = False) -> bool:
    """Copy the parameters and buffers of a TorchScript file into `network` (strict key match).

    A bundle exported for MONAI Label ships only ``models/model.ts``; its first MONAI Label training
    starts from those weights instead of a random network.

    Args:
        network: the eager network (e.g. ``DualBranchVNet``) the TorchScript model was exported from.
        path: the TorchScript file (``models/model.ts``).
        missing_ok: return False instead of raising when `path` does not exist.

    Returns:
        True when weights were loaded, False when `path` is missing and `missing_ok`.

    Raises:
        FileNotFoundError: `path` is missing and not `missing_ok`.
        RuntimeError: the file's parameters do not match the network's (names the differing keys).
    """
    if not os.path.isfile(path):
        if missing_ok:
            return False
        raise FileNotFoundError(f"TorchScript file {str(path)!r} does not exist.")
    device = next(network.parameters()).device
    state = torch.jit.load(str(path), map_location=device).state_dict()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"the weights of {str(path)!r} do not fit the network (same n_filters / num_classes?): {e}") from e
    return True


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _load_weights(network: torch.nn.Module, checkpoint: PathLike) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a full training checkpoint (runs/checkpoints/*.pt)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(
            f"checkpoint {str(checkpoint)!r} does not fit the bundle's network_def; pass the network settings it was "
            f"trained with, e.g. --network_def#n_filters 4: {e}"
        ) from e


def _parsed_network_def(parser: ConfigParser) -> Dict[str, Any]:
    raw = parser.get("network_def")
    return {k: (v if k.startswith("_") else parser.get_parsed_content(f"network_def#{k}")) for k, v in raw.items()}


def export_monailabel_bundle(
    bundle_dir: PathLike,
    checkpoint: PathLike,
    output_dir: PathLike,
    overwrite: bool = False,
    atol: float = 1e-5,
    **override: Any,
) -> Path:
    """Write a bundle folder that MONAI Label's ``monaibundle`` app serves (and trains).

    Reads the bundle's ``configs/train.yaml`` and ``configs/inference.yaml`` with `override`
    applied (e.g. ``{"network_def#n_filters": 4}``), loads `checkpoint` into ``network_def``,
    scripts it in eval mode (output: the mean probability of the two decoders, `(B, C, *spatial)`)
    and checks the TorchScript output against the eager one. Writes into a temporary folder next
    to `output_dir`, which then replaces `output_dir` in one rename:

    - ``configs/metadata.json``, ``configs/logging.conf``, ``LICENSE``: copied;
    - ``configs/inference.yaml``: ``configs/monailabel/inference.yaml`` with the bundle's values
      (:data:`MONAILABEL_INFERENCE_KEYS`, ``network_def``);
    - ``configs/train.yaml``: ``configs/train.yaml`` + ``configs/monailabel/train.yaml`` + `override`;
    - ``models/model.ts`` (metadata and inference config embedded), no ``models/model.pt``;
    - ``docs/README.md``: ``docs/monailabel.md``.

    Args:
        bundle_dir: the SASNet bundle (``bundles/la``).
        checkpoint: network weights (``models/model.pt``) or a training checkpoint with a ``"model"`` entry.
        output_dir: the folder to write, e.g. ``<app>/model/sasnet_la``; never inside `bundle_dir`.
        overwrite: replace an existing non-empty `output_dir`.
        atol: largest accepted difference between TorchScript and eager outputs.
        override: config overrides for both configs, ``{"id#sub_id": value}``.

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: a missing checkpoint or bundle config.
        FileExistsError: `output_dir` is not empty and `overwrite` is False.
        ValueError: `output_dir` inside `bundle_dir` (or containing it or the checkpoint).
        KeyError: an override key that the bundle does not define.
        RuntimeError: checkpoint and ``network_def`` do not match, or the TorchScript output differs.
    """
    bundle, out, ckpt = Path(bundle_dir).resolve(), Path(output_dir).resolve(), Path(checkpoint).resolve()
    configs = bundle / "configs"
    names = ("train.yaml", "inference.yaml", "metadata.json", "monailabel/train.yaml", "monailabel/inference.yaml")
    needed = [configs / n for n in names]
    for path in [ckpt, *needed]:
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} does not exist (needed to export {str(bundle)!r} for MONAI Label).")
    if _inside(out, bundle) or _inside(bundle, out) or _inside(ckpt, out):
        raise ValueError(
            f"output_dir {str(out)!r} must be outside the bundle {str(bundle)!r} and must not contain the checkpoint "
            f"{str(ckpt)!r}: the export never writes over its inputs."
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"output_dir {str(out)!r} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")

    parser = ConfigParser(ConfigParser.load_config_files([str(configs / "train.yaml"), str(configs / "inference.yaml")]))
    for key, value in override.items():
        parser[key] = value
    check_config_keys(str(configs), parser)
    network = parser.get_parsed_content("network_def", instantiate=True)
    _load_weights(network, ckpt)
    network.eval()
    scripted = torch.jit.script(network)
    in_channels, spatial_dims = (int(parser.get_parsed_content(f"network_def#{k}")) for k in ("in_channels", "spatial_dims"))
    probe = torch.randn(1, in_channels, *([32] * spatial_dims))
    with torch.no_grad():
        diff = (scripted(probe) - network(probe)).abs().max().item()
    if diff > atol:
        raise RuntimeError(f"TorchScript output differs from the checkpoint's by {diff:.3g} (> atol {atol}).")

    infer_cfg = ConfigParser.load_config_file(str(configs / "monailabel" / "inference.yaml"))
    for key, source in MONAILABEL_INFERENCE_KEYS.items():
        infer_cfg[key] = parser.get_parsed_content(source)
    infer_cfg["network_def"] = _parsed_network_def(parser)
    train_files = [str(configs / "train.yaml"), str(configs / "monailabel" / "train.yaml")]
    train_cfg = ConfigParser(ConfigParser.load_config_files(train_files))
    for key, value in override.items():
        train_cfg[key] = value
    for key in ("inference_spacing", "inference_axcodes"):
        train_cfg[key] = infer_cfg[key]
    metadata = json.loads((configs / "metadata.json").read_text())

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (tmp / "configs").mkdir()
        (tmp / "models").mkdir()
        (tmp / "docs").mkdir()
        shutil.copy2(configs / "metadata.json", tmp / "configs" / "metadata.json")
        if (configs / "logging.conf").is_file():
            shutil.copy2(configs / "logging.conf", tmp / "configs" / "logging.conf")
        if (bundle / "LICENSE").is_file():
            shutil.copy2(bundle / "LICENSE", tmp / "LICENSE")
        if (bundle / "docs" / "monailabel.md").is_file():
            shutil.copy2(bundle / "docs" / "monailabel.md", tmp / "docs" / "README.md")
        for name, content, sources in (
            ("inference.yaml", infer_cfg, "configs/monailabel/inference.yaml"),
            ("train.yaml", train_cfg.get(), "configs/train.yaml + configs/monailabel/train.yaml"),
        ):
            path = tmp / "configs" / name
            ConfigParser.export_config_file(content, str(path), fmt="yaml", sort_keys=False)
            header = f"# Exported for MONAI Label from {bundle.name}: {sources} (comments there); see docs/README.md.\n"
            path.write_text(header + path.read_text())
        save_net_with_metadata(
            scripted,
            str(tmp / "models" / "model.ts"),
            append_timestamp=False,
            meta_values=metadata,
            more_extra_files={"inference.json": json.dumps(infer_cfg).encode()},
        )
        os.chmod(tmp, 0o777 & ~current_umask())
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def prepare_monailabel_app(app_dir: PathLike, sample_app: Optional[PathLike] = None) -> Path:
    """Create a MONAI Label app folder from MONAI Label's sample ``monaibundle`` app, unless it exists.

    Copies the sample app (shipped in the monailabel wheel under ``<prefix>/monailabel/sample-apps``)
    and puts :data:`TORCHVISION_GUARD` at the top of its ``main.py``, so that the app runs with
    monailabel installed without torchvision. Bundles go into ``<app_dir>/model/<name>``.

    Args:
        app_dir: the app folder to create; an existing folder with a ``main.py`` is left as it is.
        sample_app: the sample app folder; default: the installed monailabel's ``monaibundle``.

    Returns:
        `app_dir`.

    Raises:
        FileNotFoundError: the sample app is not found (names the folders tried).
        FileExistsError: `app_dir` exists, is not empty and has no ``main.py``.
    """
    app = Path(app_dir)
    if (app / "main.py").is_file():
        return app
    if app.exists() and any(app.iterdir()):
        raise FileExistsError(f"app_dir {str(app)!r} is not empty and has no main.py; choose a new folder.")
    candidates = [Path(sample_app)] if sample_app is not None else [
        Path(prefix) / "monailabel" / "sample-apps" / "monaibundle" for prefix in dict.fromkeys([sys.prefix, sys.base_prefix])
    ]
    source = next((c for c in candidates if (c / "main.py").is_file()), None)
    if source is None:
        raise FileNotFoundError(
            f"MONAI Label's sample app 'monaibundle' not found in {[str(c) for c in candidates]}; install monailabel "
            "(see bundles/la/docs/monailabel.md) or pass its folder (monailabel apps --download --name monaibundle)."
        )
    app.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=app.parent, prefix=f".{app.name}.tmp-"))
    try:
        shutil.copytree(source, tmp / "app", ignore=shutil.ignore_patterns("__pycache__", "model", "logs"))
        main = tmp / "app" / "main.py"
        main.write_text(TORCHVISION_GUARD + "\n" + main.read_text())
        if app.exists():
            app.rmdir()  # empty, checked above
        os.replace(tmp / "app", app)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return app
