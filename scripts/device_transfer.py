"""Move a prepared dataset and large results to and from a machine reached only by file copies.

Commands (see ``sasnet_components.data.pack`` for the formats):

    python scripts/device_transfer.py pack [--dataset_dir data/la] [--output_dir device_data/la-pack] \\
        [--part_size_mib 48] [--name la] [--preset 6] [--extreme False] [--delta 1] [--workers N]
    python scripts/device_transfer.py unpack SOURCE [SOURCE ...] --output_dir DIR \\
        [--allow_partial False] [--gzip False] [--workers N]
    python scripts/device_transfer.py split FILE --output_dir DIR [--chunk_mib 15]
    python scripts/device_transfer.py join MANIFEST --output_path FILE

``pack`` writes ``<name>.part01 ...`` (each at most ``--part_size_mib``; part 1 holds the labeled and
validation cases first) and ``<name>.manifest.json``. ``unpack`` takes the pack folder, or the
manifest and the part files, checks every part, writes the cases present (``.nii``, or ``.nii.gz``
with ``--gzip``) and their ``datalist.json``; it refuses when a labeled, validation or test case is
missing unless ``--allow_partial``. ``split`` / ``join`` cut a file into checksummed chunks of at most
``--chunk_mib`` MiB and join them back.

Only numpy, nibabel and the standard library are needed: the package's modules are loaded without
its ``__init__`` (which imports torch and MONAI), and without ``fire`` a small built-in parser reads
the same command line (``--key value``, ``--key=value``, ``--flag``, ``--noflag``).

A mistake in the input ends with ``device_transfer.py: error: <message>`` as the last line on stderr
and exit status 1.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import logging
import sys
import types
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PACK_DIR = REPO / "device_data" / "la-pack"

__all__ = ["pack", "unpack", "split", "join", "main"]


def _load_pack_module() -> types.ModuleType:
    """``sasnet_components.data.pack``, imported without the package ``__init__`` files (no torch / MONAI)."""
    if "sasnet_components" in sys.modules:  # already imported in full (tests, an installed package)
        return importlib.import_module("sasnet_components.data.pack")
    root = REPO / "sasnet_components"  # the checkout this script belongs to, before an installed copy
    if not (root / "data" / "pack.py").is_file():
        spec = importlib.util.find_spec("sasnet_components")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"sasnet_components is neither in '{REPO}' nor installed.")
        root = Path(spec.submodule_search_locations[0])
    for name, folder in (("sasnet_components", root), ("sasnet_components.utils", root / "utils"),
                         ("sasnet_components.data", root / "data")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(folder)]  # a package whose submodules load, whose __init__ does not run
        sys.modules[name] = stub
    return importlib.import_module("sasnet_components.data.pack")


def pack(
    dataset_dir: str = "data/la",
    output_dir: str = str(DEFAULT_PACK_DIR),
    part_size_mib: float = 48.0,
    name: str | None = None,
    preset: int = 6,
    extreme: bool = False,
    delta: int = 1,
    workers: int | None = None,
) -> None:
    """Pack a prepared dataset into parts and a manifest (see ``pack_dataset``)."""
    _load_pack_module().pack_dataset(
        dataset_dir, output_dir, part_size_mib=part_size_mib, name=name, preset=preset, extreme=extreme,
        delta=delta, workers=workers,
    )


def unpack(
    *sources: str, output_dir: str, allow_partial: bool = False, gzip: bool = False, workers: int | None = None
) -> None:
    """Unpack the parts present into a prepared dataset with its datalist (see ``unpack_dataset``)."""
    if not sources:
        raise _load_pack_module().InvalidInputError(
            "unpack needs the pack folder, or its manifest and part files, e.g. "
            "`unpack device_data/la-pack --output_dir data/la`."
        )
    _load_pack_module().unpack_dataset(
        list(sources), output_dir, allow_partial=allow_partial, gzip=gzip, workers=workers
    )


def split(path: str, output_dir: str, chunk_mib: float = 15.0) -> None:
    """Cut a file into checksummed chunks (see ``split_file``)."""
    _load_pack_module().split_file(path, output_dir, chunk_mib=chunk_mib)


def join(manifest: str, output_path: str) -> None:
    """Join the chunks of a ``.chunks.json`` into one verified file (see ``join_file``)."""
    _load_pack_module().join_file(manifest, output_path)


COMMANDS: dict[str, Callable[..., None]] = {"pack": pack, "unpack": unpack, "split": split, "join": join}


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _plain_call(argv: Sequence[str]) -> None:
    """Call a command from ``argv`` without fire: ``COMMAND [positional ...] [--key value | --key=value | --flag]``."""
    if not argv or argv[0] not in COMMANDS:
        raise _load_pack_module().InvalidInputError(
            f"expected a command among {list(COMMANDS)}, got {argv[0] if argv else 'none'!r}."
        )
    function = COMMANDS[argv[0]]
    params = inspect.signature(function).parameters
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    rest = list(argv[1:])
    while rest:
        token = rest.pop(0)
        if not token.startswith("--"):
            args.append(_value(token))
            continue
        key, eq, text = token[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if key not in params and key.startswith("no") and key[2:] in params:
                kwargs[key[2:]] = False
                continue
            if not rest or rest[0].startswith("--"):
                kwargs[key] = True
                continue
            text = rest.pop(0)
        if key not in params:
            raise _load_pack_module().InvalidInputError(f"`{argv[0]}` has no option --{key}; options: {list(params)}.")
        kwargs[key] = _value(text)
    function(*args, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    """Run a command; an input error ends with ``device_transfer.py: error: <message>`` and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    try:
        try:
            import fire
        except ImportError:
            _plain_call(argv)
        else:
            fire.Fire(COMMANDS, command=argv, name=Path(__file__).name)
    except (OSError, ValueError, KeyError) as e:
        sys.stdout.flush()  # the log goes to stdout: keep the message after it
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"{Path(__file__).name}: error: {message}", file=sys.stderr)
        raise SystemExit(1) from e


if __name__ == "__main__":
    main()
