"""Export a trained SASNet bundle as a folder that MONAI Label's ``monaibundle`` app serves and trains.

Writes ``<app_dir>/model/<name>`` (and creates the app from MONAI Label's sample ``monaibundle``
app when ``<app_dir>`` has no ``main.py``), or only the bundle folder with ``--output_dir``:
``models/model.ts`` (no ``model.pt``), ``configs/inference.yaml`` (MONAI transforms only),
``configs/train.yaml`` (semi-supervised training on the datastore; needs sasnet_components),
``configs/metadata.json``, ``docs/README.md``, ``sasnet_export.json`` (the files it wrote). Settings
of the bundle the checkpoint was trained with are passed as bundle overrides. ``--overwrite true``
replaces only an unchanged earlier export; any other folder is refused and left as it is. A refused
request ends with its reason as the last line and exit status 2. Any SASNet bundle of this repository
(``--bundle``, default ``bundles/la``); its name in the app is ``sasnet_<bundle folder name>`` unless
``--name`` says otherwise. See bundles/la/docs/monailabel.md, bundles/pancreas/docs/monailabel.md and bundles/brats/docs/monailabel.md.

Usage:
    python scripts/export_monailabel.py --checkpoint bundles/la/models/model.pt --app_dir apps/sasnet
    python scripts/export_monailabel.py --bundle bundles/pancreas --checkpoint bundles/pancreas/models/model.pt \
        --app_dir apps/sasnet
    python scripts/export_monailabel.py --checkpoint demo_output/model.pt --output_dir /tmp/sasnet_la \
        --network_def#n_filters 4 --patch_size "[48,48,32]"
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import fire

from sasnet_components.data.checks import exception_message
from sasnet_components.utils import (
    InputError,
    InvalidInputError,
    as_bool,
    export_monailabel_bundle,
    prepare_monailabel_app,
)
from sasnet_components.utils.monailabel import export_network

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "la"


def export(
    checkpoint: str,
    app_dir: Optional[str] = None,
    output_dir: Optional[str] = None,
    name: Optional[str] = None,
    bundle: Optional[str] = None,
    bundle_dir: Optional[str] = None,
    overwrite: bool = False,
    sample_app: Optional[str] = None,
    **override: Any,
) -> None:
    """Export `checkpoint` of the bundle at `bundle` for MONAI Label.

    Args:
        checkpoint: network weights (models/model.pt) or a training checkpoint (runs/checkpoints/*.pt).
        app_dir: MONAI Label app folder; the bundle goes to <app_dir>/model/<name>.
        output_dir: the bundle folder to write instead (exactly one of app_dir, output_dir).
        name: the bundle's name in the app (it must not contain deepedit, deepgrow, detection or classification);
            default ``sasnet_<bundle folder name>`` (``sasnet_la``, ``sasnet_pancreas``, ``sasnet_brats``).
        bundle: the SASNet bundle whose configs are exported (default: bundles/la of this repository).
        bundle_dir: the same as `bundle` (its former name; pass one of them).
        overwrite: replace an earlier export of this script (unchanged, with nothing else in its folder).
        sample_app: MONAI Label's sample monaibundle app folder (default: the installed one).
        override: bundle config overrides, e.g. --network_def#n_filters 4.
    """
    if (app_dir is None) == (output_dir is None):
        raise InvalidInputError(f"pass exactly one of --app_dir and --output_dir, got app_dir={app_dir!r}, output_dir={output_dir!r}.")
    if bundle is not None and bundle_dir is not None and Path(bundle).resolve() != Path(bundle_dir).resolve():
        raise InvalidInputError(f"--bundle {bundle!r} and --bundle_dir {bundle_dir!r} name different bundles; pass one.")
    bundle_dir = str(bundle or bundle_dir or BUNDLE)
    if not (Path(bundle_dir) / "configs" / "train.yaml").is_file():
        raise InvalidInputError(f"--bundle {bundle_dir!r} is not a SASNet bundle folder: it has no configs/train.yaml.")
    name = name if name is not None else f"sasnet_{Path(bundle_dir).resolve().name}"
    export_network(bundle_dir, checkpoint, **override)  # the checkpoint fits, before any folder is made
    if app_dir is not None:
        if any(word in name for word in ("deepedit", "deepgrow", "detection", "classification")):
            raise InvalidInputError(f"--name {name!r}: MONAI Label gives names containing deepedit/deepgrow/detection/classification another task type.")
        app = prepare_monailabel_app(app_dir, sample_app)
        output_dir = str(app / "model" / name)
    out = export_monailabel_bundle(bundle_dir, checkpoint, output_dir, overwrite=as_bool(overwrite, "overwrite"), **override)
    print(f"exported bundle: {out}")
    if app_dir is not None:
        print(
            f"serve it: PYTHONPATH={Path(__file__).resolve().parents[1]} monailabel start_server --app {app_dir} "
            f"--studies <images folder> --conf models {name} --conf zoo_source ngc --conf sam2 false --host 127.0.0.1 --port 8000"
        )


if __name__ == "__main__":
    try:
        fire.Fire(export)
    except InputError as e:  # the caller's mistake, not a bug
        print(f"export_monailabel.py: error: {exception_message(e)}", file=sys.stderr)
        sys.exit(2)
