"""Export of a trained SASNet bundle for MONAI Label's ``monaibundle`` app.

The exported folder is what MONAI Label expects under ``<app>/model/<name>``: ``configs/metadata.json``,
``configs/inference.yaml`` (MONAI transforms only), ``configs/train.yaml`` (semi-supervised training
on the datastore, needs this package), ``models/model.ts`` and no ``models/model.pt`` (MONAI Label
instantiates ``network_def`` whenever ``model.pt`` exists, which would need this package for
inference too). Each export holds ``sasnet_export.json``, the list of files it wrote, so that a
later export replaces only an unchanged earlier one. The app's ``main.py`` checks every MONAI
Label request before ``monai.bundle`` reads it (:data:`REQUEST_GUARD`,
:func:`check_monailabel_overrides`). See ``bundles/la/docs/monailabel.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, NoReturn, Optional, Union

import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata

from .bundle import check_config_keys
from .checkpoints import load_model_weights
from .errors import InvalidInputError, MissingInputError, OutputExistsError, UnknownKeyError
from .io import current_umask, sha256_file, temporary_dir

__all__ = [
    "EXPORT_MARKER",
    "MONAILABEL_INFERENCE_KEYS",
    "MONAILABEL_OVERRIDES",
    "MONAILABEL_RUN_IDS",
    "REQUEST_GUARD",
    "TORCHVISION_GUARD",
    "check_monailabel_overrides",
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
    "intensity_window": "intensity_window",  # CT bundles (Pancreas-CT): copied only where the MONAI Label config has it
}

# the file in every exported bundle folder that lists what the export wrote (relative path -> sha256)
EXPORT_MARKER = "sasnet_export.json"
_WRITTEN_BY = "sasnet_components.utils.export_monailabel_bundle (scripts/export_monailabel.py)"

# the overrides MONAI Label 0.8.5's BundleTrainTask passes to monai.bundle -> what sets them (for messages)
MONAILABEL_OVERRIDES = {
    "bundle_root": "the bundle folder",
    "device": "the request's device",
    "train#trainer#max_epochs": "the request's max_epochs",
    "train#dataset#data": "the datastore's labeled images",
    "validate#dataset#data": "the validation share (val_split) of the labeled images",
    "train#handlers": "MONAI Label's checkpoint loader (the request's pretrained and model_filename)",
}
# the request's run_id: "" is the default MONAI Label shows in its train options (monai.bundle then resolves
# the whole config, which runs the same training)
MONAILABEL_RUN_IDS = ("run", "")
# what monai.bundle's ConfigParser reads as syntax: "$" expression, "@" reference, "%" macro (at the start),
# "@#", "%#", "@::", "%::" relative ids (anywhere)
_CONFIG_SYNTAX = re.compile(r"^[$@%]|[@%](?:#|::)")
_SYNTAX_NOTE = (
    "monai.bundle runs strings that start with '$' as Python, resolves '@' references, loads '%' files and "
    "builds '_target_' dicts, so only plain values reach it"
)

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

# MONAI Label 0.8.5 hands request values and datastore paths to monai.bundle as config overrides. The
# exported app's main.py ends with this guard (before its ``if __name__ == "__main__":`` block): MyApp then
# builds these task classes, which refuse such values before monai.bundle reads them.
REQUEST_GUARD = '''\
# --- request guard (scripts/export_monailabel.py) -----------------------------------------------------
# MONAI Label hands request values and datastore paths to monai.bundle as config overrides (max_epochs as
# train#trainer#max_epochs, device, the labeled images ...). monai.bundle runs strings that start with "$"
# as Python, resolves "@" references, loads "%" files and builds "_target_" dicts, so the bundle tasks of
# this app refuse any value that is not plain, before monai.bundle reads it:
# - training: sasnet_components.utils.monailabel.check_monailabel_overrides, on the request's run_id first, then on
#   the overrides as soon as MONAI Label has built them, before either route (in-process or torchrun) uses them;
# - inference: only the request's "device" reaches the bundle config; it must be a torch device name.
# The label is written as uint8 (class indices) unless the request's "result_dtype" says otherwise.
import torch as _torch
from monailabel.tasks.infer.bundle import BundleInferTask as _BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask as _BundleTrainTask


class SASNetBundleTrainTask(_BundleTrainTask):
    """MONAI Label's bundle trainer; checks the run_id and the overrides of a request before monai.bundle gets them."""

    def __call__(self, request, datastore):
        from sasnet_components.utils.monailabel import check_monailabel_overrides  # training needs the package

        check_monailabel_overrides({}, self.bundle_path, run_id=request.get("run_id", "run"))
        return super().__call__(request, datastore)

    def _update_overrides(self, overrides):
        from sasnet_components.utils.monailabel import check_monailabel_overrides

        check_monailabel_overrides(overrides, self.bundle_path)
        super()._update_overrides(overrides)


class SASNetBundleInferTask(_BundleInferTask):
    """MONAI Label's bundle inferer; refuses a request device that is not a torch device name, and writes
    the label as uint8 unless the request asks for another result_dtype (MONAI Label would write float32)."""

    def writer(self, data, extension=None, dtype=None):
        if dtype is None and not data.get("result_dtype"):
            dtype = "uint8"
        return super().writer(data, extension, dtype)

    def _update_device(self, data):
        device = data.get("device") if data else None
        if device:
            try:
                _torch.device(device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(
                    f"MONAI Label infer request refused: device {device!r} is not a torch device name such as "
                    "'cpu' or 'cuda:0'; MONAI Label writes it into the bundle config, which reads '$', '@' and '%'."
                ) from e
        super()._update_device(data)


BundleTrainTask, BundleInferTask = SASNetBundleTrainTask, SASNetBundleInferTask  # the classes MyApp builds
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
        raise MissingInputError(f"TorchScript file {str(path)!r} does not exist.")
    device = next(network.parameters()).device
    state = torch.jit.load(str(path), map_location=device).state_dict()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"the weights of {str(path)!r} do not fit the network (same n_filters / num_classes?): {e}") from e
    return True


def _refuse(error: type, key: str, expected: str, value: Any, where: str = "") -> NoReturn:
    raise error(
        f"MONAI Label training request refused: {MONAILABEL_OVERRIDES[key]} ({key}{where}) must be {expected}, "
        f"got {value!r}; {_SYNTAX_NOTE}."
    )


def _check_plain_path(value: Any, key: str, where: str = "") -> None:
    if not isinstance(value, str):
        _refuse(TypeError, key, "a path string", value, where)
    if not value or _CONFIG_SYNTAX.search(value):
        _refuse(ValueError, key, "a plain path (not starting with '$', '@' or '%', no '@#', '%#', '@::', '%::')", value, where)


def _check_datalist(value: Any, key: str) -> None:
    if not isinstance(value, list):
        _refuse(TypeError, key, 'a list of {"image": path, "label": path}', value)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            _refuse(TypeError, key, 'a dict {"image": path, "label": path}', item, f"[{i}]")
        if sorted(item) != ["image", "label"]:
            _refuse(ValueError, key, 'a dict with exactly the keys "image" and "label"', item, f"[{i}]")
        for name in ("image", "label"):
            _check_plain_path(item[name], key, f"[{i}][{name!r}]")


def _check_handlers(value: Any, bundle_dir: Path) -> None:
    key, models = "train#handlers", bundle_dir / "models"
    expected = f"the bundle's own train#handlers, optionally after MONAI Label's CheckpointLoader of a file in {str(models)!r}"
    own = ConfigParser(ConfigParser.load_config_file(str(bundle_dir / "configs" / "train.yaml"))).get(key, [])
    if not isinstance(value, list):
        _refuse(TypeError, key, expected, value)
    if value == own:
        return
    loader = value[0] if value[1:] == own else None
    path = loader.get("load_path") if isinstance(loader, dict) else None
    if not (
        isinstance(loader, dict)
        and sorted(loader) == ["_target_", "load_dict", "load_path", "strict"]
        and loader["_target_"] == "CheckpointLoader"
        and loader["load_dict"] == {"model": "$@network"}  # what MONAI Label writes, never a request value
        and isinstance(loader["strict"], bool)
        and isinstance(path, str)
        and not _CONFIG_SYNTAX.search(path)
        and Path(path).resolve().parent == models.resolve()
    ):
        _refuse(ValueError, key, expected, [h for h in value if h not in own])


def check_monailabel_overrides(overrides: Mapping[str, Any], bundle_dir: PathLike, run_id: Any = "run") -> None:
    """Refuse a MONAI Label training request unless every override it makes is a plain value of the expected type.

    MONAI Label 0.8.5's ``BundleTrainTask`` passes request values (``max_epochs``, ``device``,
    ``model_filename``, ``tracking*``), the datastore's image and label paths and the app's bundle
    folder to ``monai.bundle.run`` as config overrides (:data:`MONAILABEL_OVERRIDES`), and the
    request's ``run_id`` as the config id to run. ``monai.bundle`` runs strings that start with ``$``
    as Python, resolves ``@`` references, loads ``%`` files and builds ``_target_`` dicts, also
    inside lists and dicts. The exported app (:data:`REQUEST_GUARD`) calls this right before
    ``monai.bundle.run``, before any value is read. Accepted:

    - ``bundle_root``: a plain path string;
    - ``device``: a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``);
    - ``train#trainer#max_epochs``: an int >= 1 (not a bool);
    - ``train#dataset#data``, ``validate#dataset#data``: lists of ``{"image": path, "label": path}``;
    - ``train#handlers``: the bundle's own ``train#handlers`` (``configs/train.yaml``), optionally after
      MONAI Label's ``CheckpointLoader`` of a file in ``<bundle_dir>/models``;
    - `run_id`: one of :data:`MONAILABEL_RUN_IDS`.

    A plain path is a non-empty string that does not start with ``$``, ``@`` or ``%`` and contains no
    relative id (``@#``, ``%#``, ``@::``, ``%::``); ``$`` elsewhere (``/data/$scan.nii.gz``) is plain.
    Any other override (experiment tracking: ``tracking``, ``tracking_uri``, ``experiment_name``,
    ``run_name``) is refused.

    Args:
        overrides: the override dict ``BundleTrainTask`` passes to ``monai.bundle.run``.
        bundle_dir: the exported bundle folder (``BundleTrainTask.bundle_path``).
        run_id: the request's ``run_id`` (``"run"`` when absent).

    Raises:
        KeyError: an override MONAI Label sets only for experiment tracking, or any other unknown key.
        TypeError: a value of another type (e.g. a string or a bool for ``max_epochs``).
        ValueError: a string that ``monai.bundle`` reads as syntax, ``max_epochs`` < 1, a device torch does
            not know, handlers other than the accepted ones, or another `run_id`.
    """
    unknown = sorted(set(overrides) - set(MONAILABEL_OVERRIDES))
    if unknown:
        raise UnknownKeyError(
            f"MONAI Label training request refused: this app accepts no override {unknown} (set tracking to 'None'); "
            f"accepted: {list(MONAILABEL_OVERRIDES)}."
        )
    if run_id not in MONAILABEL_RUN_IDS:
        raise InvalidInputError(
            f"MONAI Label training request refused: run_id must be one of {list(MONAILABEL_RUN_IDS)}, got {run_id!r}."
        )
    for key, value in overrides.items():
        if key == "bundle_root":
            _check_plain_path(value, key)
        elif key == "device":
            if not isinstance(value, str):
                _refuse(TypeError, key, "a torch device name such as 'cpu' or 'cuda:0'", value)
            try:
                torch.device(value)
            except RuntimeError:
                _refuse(ValueError, key, "a torch device name such as 'cpu' or 'cuda:0'", value)
        elif key == "train#trainer#max_epochs":
            if isinstance(value, bool) or not isinstance(value, int):
                _refuse(TypeError, key, "an int >= 1", value)
            if value < 1:
                _refuse(ValueError, key, "an int >= 1", value)
        elif key == "train#handlers":
            _check_handlers(value, Path(bundle_dir))
        else:
            _check_datalist(value, key)


def _folder_digests(folder: Path) -> Dict[str, Optional[str]]:
    """The sha256 of each regular file below `folder`, by relative POSIX path.

    A link, another non-file and an empty folder (``"name/"``), none of which an export writes, map to None.
    """
    found: Dict[str, Optional[str]] = {}
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if here != folder and not dirs and not files:
            found[here.relative_to(folder).as_posix() + "/"] = None
        for name in dirs + files:
            path = here / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                found[rel] = None
            elif path.is_file():
                found[rel] = sha256_file(path)
    return dict(sorted(found.items()))


def _why_not_an_export(folder: Path) -> Optional[str]:
    """None when `folder` holds an earlier export and nothing else, unchanged; otherwise the reason."""
    if folder.is_symlink() or not folder.is_dir():
        return "it is not a folder"
    try:
        marker = json.loads((folder / EXPORT_MARKER).read_text())
    except (OSError, ValueError):
        return f"it has no readable {EXPORT_MARKER}, which every export writes"
    listed = marker.get("files") if isinstance(marker, dict) and marker.get("written_by") == _WRITTEN_BY else None
    if not isinstance(listed, dict):
        return f"its {EXPORT_MARKER} was not written by {_WRITTEN_BY}"
    found = _folder_digests(folder)
    found.pop(EXPORT_MARKER, None)
    foreign: List[str] = sorted(p for p in found if p not in listed)
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        return f"it holds files the export did not write: {foreign[:5]}{more}"
    changed = sorted(p for p, digest in found.items() if digest != listed[p])
    if changed:
        return f"files changed since the export: {changed}"
    return None


def _check_output_dir(out: Path, overwrite: bool) -> None:
    """Raise unless writing `out` loses nothing: it is missing, empty, or an unchanged earlier export and `overwrite`."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    reason = _why_not_an_export(out)
    if reason is not None:
        raise OutputExistsError(
            f"output_dir {str(out)!r} is not replaced and nothing in it is touched: {reason}. Only an unchanged "
            f"earlier export (every file listed in its {EXPORT_MARKER}) can be replaced; choose another output_dir."
        )
    if not overwrite:
        raise OutputExistsError(
            f"output_dir {str(out)!r} holds an earlier export; pass overwrite=True (--overwrite) to replace it."
        )


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


CHECKPOINT_HINT = (
    "Training writes the model as <ckpt_dir>/model.pt (by default bundles/la/models/model.pt); `bash scripts/demo.sh` "
    'writes a small one as demo_output/models/model.pt (export it with --network_def#n_filters 4 --patch_size "[48,48,32]").'
)


def _checkpoint_hint(bundle: Path, parser: ConfigParser) -> str:
    """How to get a checkpoint of `bundle`: :data:`CHECKPOINT_HINT` for LA, else the bundle's ``model_checkpoint_hint``."""
    if bundle.name == "la" or "model_checkpoint_hint" not in parser:
        return CHECKPOINT_HINT
    return str(parser.get("model_checkpoint_hint"))


def _bundle_parser(bundle: Path, override: Mapping[str, Any]) -> ConfigParser:
    """The bundle's train.yaml + inference.yaml with `override` applied and its keys checked."""
    configs = bundle / "configs"
    parser = ConfigParser(ConfigParser.load_config_files([str(configs / "train.yaml"), str(configs / "inference.yaml")]))
    for key, value in override.items():
        parser[key] = value
    check_config_keys(str(configs), parser)
    return parser


def export_network(bundle_dir: PathLike, checkpoint: PathLike, **override: Any) -> torch.nn.Module:
    """The bundle's ``network_def`` (with `override`) holding the weights of `checkpoint`, in eval mode.

    Args:
        bundle_dir: the SASNet bundle (``bundles/la``).
        checkpoint: network weights (``models/model.pt``) or a training checkpoint with a ``"model"`` entry.
        override: config overrides, ``{"id#sub_id": value}`` (e.g. ``{"network_def#n_filters": 4}``).

    Raises:
        UnknownKeyError: an override key that the bundle does not define.
        MissingInputError, InvalidInputError: a missing or unreadable checkpoint, or one whose weights do not fit
            the network (:func:`sasnet_components.utils.check_checkpoint`, naming ``checkpoint`` and how to get one).
    """
    bundle = Path(bundle_dir).resolve()
    parser = _bundle_parser(bundle, override)
    return _network_with_weights(parser, checkpoint, _checkpoint_hint(bundle, parser))


def _network_with_weights(parser: ConfigParser, checkpoint: PathLike, hint: str = CHECKPOINT_HINT) -> torch.nn.Module:
    """``network_def`` of `parser` holding the weights of `checkpoint`, in eval mode (see :func:`export_network`)."""
    network = parser.get_parsed_content("network_def", instantiate=True)
    load_model_weights(checkpoint, "checkpoint", network, hint=hint)
    return network.eval()


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
    to `output_dir`, which then replaces `output_dir` in one rename. An existing `output_dir` must be
    empty, or, with `overwrite`, an earlier export that holds nothing else and is unchanged (checked
    against its :data:`EXPORT_MARKER` before the export starts and again just before the rename);
    anything else (a user's folder, MONAI Label's training results in ``models/model.pt`` and
    ``runs/``, an edited config) is refused and left as it is. Writes:

    - ``configs/metadata.json``, ``configs/logging.conf``, ``LICENSE``: copied;
    - ``configs/inference.yaml``: ``configs/monailabel/inference.yaml`` with the bundle's values
      (:data:`MONAILABEL_INFERENCE_KEYS`, ``network_def``);
    - ``configs/train.yaml``: ``configs/train.yaml`` + ``configs/monailabel/train.yaml`` + `override`;
    - ``models/model.ts`` (metadata and inference config embedded), no ``models/model.pt``;
    - ``docs/README.md``: ``docs/monailabel.md``;
    - :data:`EXPORT_MARKER`: what wrote the folder, from which bundle and checkpoint, and the sha256
      of every file above.

    Args:
        bundle_dir: the SASNet bundle (``bundles/la``).
        checkpoint: network weights (``models/model.pt``) or a training checkpoint with a ``"model"`` entry.
        output_dir: the folder to write, e.g. ``<app>/model/sasnet_la``; never inside `bundle_dir`.
        overwrite: replace an existing `output_dir` that holds an unchanged earlier export.
        atol: largest accepted difference between TorchScript and eager outputs.
        override: config overrides for both configs, ``{"id#sub_id": value}``.

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: a missing checkpoint or bundle config.
        FileExistsError: `output_dir` is not empty and is not an unchanged earlier export (names the reason),
            or is one and `overwrite` is False.
        ValueError: `output_dir` inside `bundle_dir` (or containing it or the checkpoint).
        KeyError: an override key that the bundle does not define.
        RuntimeError: checkpoint and ``network_def`` do not match, or the TorchScript output differs.
    """
    bundle, out, ckpt = Path(bundle_dir).resolve(), Path(output_dir).resolve(), Path(checkpoint).resolve()
    configs = bundle / "configs"
    names = ("train.yaml", "inference.yaml", "metadata.json", "monailabel/train.yaml", "monailabel/inference.yaml")
    needed = [configs / n for n in names]
    for path in needed:
        if not path.is_file():
            raise MissingInputError(f"{str(path)!r} does not exist (needed to export {str(bundle)!r} for MONAI Label).")
    if _inside(out, bundle) or _inside(bundle, out) or _inside(ckpt, out):
        raise InvalidInputError(
            f"output_dir {str(out)!r} must be outside the bundle {str(bundle)!r} and must not contain the checkpoint "
            f"{str(ckpt)!r}: the export never writes over its inputs."
        )
    _check_output_dir(out, overwrite)

    parser = _bundle_parser(bundle, override)
    network = _network_with_weights(parser, ckpt, _checkpoint_hint(bundle, parser))
    scripted = torch.jit.script(network)
    in_channels, spatial_dims = (int(parser.get_parsed_content(f"network_def#{k}")) for k in ("in_channels", "spatial_dims"))
    probe = torch.randn(1, in_channels, *([32] * spatial_dims))
    with torch.no_grad():
        diff = (scripted(probe) - network(probe)).abs().max().item()
    if diff > atol:
        raise RuntimeError(f"TorchScript output differs from the checkpoint's by {diff:.3g} (> atol {atol}).")

    infer_cfg = ConfigParser.load_config_file(str(configs / "monailabel" / "inference.yaml"))
    for key, source in MONAILABEL_INFERENCE_KEYS.items():
        if key in infer_cfg or key != "intensity_window":
            infer_cfg[key] = parser.get_parsed_content(source)
    infer_cfg["network_def"] = _parsed_network_def(parser)
    train_files = [str(configs / "train.yaml"), str(configs / "monailabel" / "train.yaml")]
    train_cfg = ConfigParser(ConfigParser.load_config_files(train_files))
    for key, value in override.items():
        train_cfg[key] = value
    for key in ("inference_spacing", "inference_axcodes", "intensity_window"):
        if key in train_cfg or key != "intensity_window":
            train_cfg[key] = infer_cfg[key]
    metadata = json.loads((configs / "metadata.json").read_text())

    out.parent.mkdir(parents=True, exist_ok=True)
    with temporary_dir(out.parent, out.name) as tmp:  # removed on an error or SIGTERM, or by a later run
        (tmp / "configs").mkdir()
        (tmp / "models").mkdir()
        shutil.copy2(configs / "metadata.json", tmp / "configs" / "metadata.json")
        if (configs / "logging.conf").is_file():
            shutil.copy2(configs / "logging.conf", tmp / "configs" / "logging.conf")
        if (bundle / "LICENSE").is_file():
            shutil.copy2(bundle / "LICENSE", tmp / "LICENSE")
        if (bundle / "docs" / "monailabel.md").is_file():
            (tmp / "docs").mkdir()
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
        marker = {"written_by": _WRITTEN_BY, "bundle": str(bundle), "version": metadata.get("version"), "checkpoint": str(ckpt)}
        marker["files"] = _folder_digests(tmp)
        (tmp / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(tmp, 0o777 & ~current_umask())
        _check_output_dir(out, overwrite)  # again: the folder may have changed during the export
        _replace_folder(tmp, out)
    return out


def _replace_folder(new: Path, out: Path) -> None:
    """Move the folder `new` to `out`, replacing what is there; if the move fails, `out` is put back.

    The previous `out` waits in a hidden ``.<name>.old-*`` folder between the two renames (not named
    as a temporary: no later run removes it if the process is killed right then).
    """
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old / out.name, out)
        old.rmdir()
        raise
    shutil.rmtree(old)


def prepare_monailabel_app(app_dir: PathLike, sample_app: Optional[PathLike] = None) -> Path:
    """Create a MONAI Label app folder from MONAI Label's sample ``monaibundle`` app, unless it exists.

    Copies the sample app (shipped in the monailabel wheel under ``<prefix>/monailabel/sample-apps``),
    puts :data:`TORCHVISION_GUARD` at the top of its ``main.py``, so that the app runs with monailabel
    installed without torchvision, and :data:`REQUEST_GUARD` before its ``if __name__ == "__main__":``
    block, so that the app's bundle tasks check every request. Bundles go into ``<app_dir>/model/<name>``.
    An existing app is used as it is (nothing in it is written here) when its ``main.py`` holds
    :data:`REQUEST_GUARD`; a ``main.py`` without it (a user's own app, or one exported before the guard)
    is refused, since MONAI Label would hand its requests to the bundle unchecked.

    Args:
        app_dir: the app folder to create, or an app this function created before.
        sample_app: the sample app folder; default: the installed monailabel's ``monaibundle``.

    Returns:
        `app_dir`.

    Raises:
        FileNotFoundError: the sample app is not found (names the folders tried).
        FileExistsError: `app_dir` exists, is not empty and has no ``main.py``, or its ``main.py`` lacks
            :data:`REQUEST_GUARD`.
    """
    app = Path(app_dir)
    if (app / "main.py").is_file():
        if REQUEST_GUARD not in (app / "main.py").read_text():
            raise OutputExistsError(
                f"app_dir {str(app)!r} has a main.py without the request guard of this export (an app of your own, or "
                "one exported by an older version), so MONAI Label would hand requests to the bundle unchecked; "
                "choose a new folder (see bundles/la/docs/monailabel.md)."
            )
        return app
    if app.exists() and any(app.iterdir()):
        raise OutputExistsError(f"app_dir {str(app)!r} is not empty and has no main.py; choose a new folder.")
    candidates = [Path(sample_app)] if sample_app is not None else [
        Path(prefix) / "monailabel" / "sample-apps" / "monaibundle" for prefix in dict.fromkeys([sys.prefix, sys.base_prefix])
    ]
    source = next((c for c in candidates if (c / "main.py").is_file()), None)
    if source is None:
        raise MissingInputError(
            f"MONAI Label's sample app 'monaibundle' not found in {[str(c) for c in candidates]}; install monailabel "
            "(see bundles/la/docs/monailabel.md) or pass its folder (monailabel apps --download --name monaibundle)."
        )
    app.parent.mkdir(parents=True, exist_ok=True)
    with temporary_dir(app.parent, app.name) as tmp:
        shutil.copytree(source, tmp / "app", ignore=shutil.ignore_patterns("__pycache__", "model", "logs"))
        main = tmp / "app" / "main.py"
        head, block, tail = main.read_text().partition('\nif __name__ == "__main__":')
        main.write_text(f"{TORCHVISION_GUARD}\n{head.rstrip()}\n\n\n{REQUEST_GUARD}\n{block}{tail}")
        if app.exists():
            app.rmdir()  # empty, checked above
        os.replace(tmp / "app", app)
    return app
