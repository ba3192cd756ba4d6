"""Move a prepared dataset and large results to and from a machine reached only by file copies.

Commands (``sasnet_components.data.pack`` documents the formats):

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

A mistake in the input ends with ``device_transfer.py: error: <message>`` as the last line on stderr
and exit status 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import fire

from sasnet_components.data.pack import join_file, pack_dataset, split_file, unpack_dataset
from sasnet_components.utils.errors import InvalidInputError, script_errors

DEFAULT_PACK_DIR = Path(__file__).resolve().parents[1] / "device_data" / "la-pack"


def pack(
    dataset_dir: str = "data/la",
    output_dir: str = str(DEFAULT_PACK_DIR),
    part_size_mib: float = 48.0,
    name: Optional[str] = None,
    preset: int = 6,
    extreme: bool = False,
    delta: int = 1,
    workers: Optional[int] = None,
) -> None:
    """Pack a prepared dataset into parts and a manifest (see ``pack_dataset``)."""
    pack_dataset(
        dataset_dir, output_dir, part_size_mib=part_size_mib, name=name, preset=preset, extreme=extreme,
        delta=delta, workers=workers,
    )


def unpack(
    *sources: str, output_dir: str, allow_partial: bool = False, gzip: bool = False, workers: Optional[int] = None
) -> None:
    """Unpack the parts present into a prepared dataset with its datalist (see ``unpack_dataset``)."""
    if not sources:
        raise InvalidInputError(
            "unpack needs the pack folder, or its manifest and part files, e.g. `unpack device_data/la-pack --output_dir data/la`."
        )
    unpack_dataset(list(sources), output_dir, allow_partial=allow_partial, gzip=gzip, workers=workers)


def split(path: str, output_dir: str, chunk_mib: float = 15.0) -> None:
    """Cut a file into checksummed chunks (see ``split_file``)."""
    split_file(path, output_dir, chunk_mib=chunk_mib)


def join(manifest: str, output_path: str) -> None:
    """Join the chunks of a ``.chunks.json`` into one verified file (see ``join_file``)."""
    join_file(manifest, output_path)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run a command; an input error ends with ``device_transfer.py: error: <message>`` and exit status 1."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    commands = {"pack": pack, "unpack": unpack, "split": split, "join": join}
    with script_errors(__file__):
        fire.Fire(commands, command=list(sys.argv[1:] if argv is None else argv), name=Path(__file__).name)


if __name__ == "__main__":
    main()
