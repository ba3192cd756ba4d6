"""Pack a prepared dataset into a few compressed parts for a machine reached only by file copies, and back.

A prepared dataset (the layout ``scripts/prepare_la.py`` writes: ``imagesTr/<id>.nii.gz``,
``labelsTr/<id>.nii.gz``, optional ``imagesTs`` / ``labelsTs``, ``datalist.json``) is packed as::

    <output_dir>/<name>.part01, <name>.part02, ...   concatenated per-case xz streams, each part at
                                                      most ``part_size_mib``; a case is never split
    <output_dir>/<name>.manifest.json                 format version, parts (file, size, SHA-256),
                                                      cases (part, byte range, SHA-256, shape, affine,
                                                      encoding ...) and the datalist (the roles)

Encoding of an image (shape ``(X, Y, Z)``, any real dtype): the z-scored LA scans hold a few
hundred values on a uniform grid (z-score of integer intensities). When every value ``v`` is
``offset + step * code`` for integer codes, with ``offset = min``, ``step`` found from the data
(least-squares fit over the distinct values) and a largest reconstruction error, in the image's
dtype, below ``tolerance`` (1e-4) and below 1 % of the step (the values lie on the grid, they are
not merely rounded to it), the codes are stored as uint8 (at most 256 levels, encoding
``"grid8"``) or uint16 (at most 65536, ``"grid16"``) with the float64 ``offset`` and ``step``.
Otherwise the image is stored bit for bit in its own dtype (encoding ``"raw"``, reconstruction
error 0); the manifest says so, nothing is silently lossy. Labels must hold integers in
``[0, 255]`` and are stored as uint8 exactly (restored to their own dtype).

Case order: labeled cases first, then validation cases, then the other unlabeled ones, then test
cases, so the first part alone is a usable subset (the labeled and validation cases and as many
unlabeled scans as fit).

:func:`unpack_dataset` checks
each part (size and SHA-256; a corrupt or missing part is named and its cases are left out),
writes the cases present in the prepared layout (uncompressed ``.nii`` by default, ``.nii.gz`` on
request) and a ``datalist.json`` restricted to them. :func:`split_file` and :func:`join_file` cut
a large file (a trained model) into checksummed chunks and join them back.

Measured on the 80 prepared LA training scans (196 MB of ``.nii.gz``; 2-core Xeon shared with other
jobs, no GPU): every image is ``grid8`` (54-212 levels, largest error 9.5e-7); the pack is 97.3 MiB
in 3 parts of at most 48 MiB (part 1: 16 labeled, 8 validation and 14 more unlabeled cases) and took
138 s; the unpack took 4-10 s to ``.nii`` (929 MB, 7.6 s CPU) and 9-14 s to ``.nii.gz`` (196 MB,
13.5 s CPU).

Everything is written through :func:`~sasnet_components.utils.io.atomic_path` (temporary file and
``os.replace``), so an interrupted run never leaves a truncated file under a final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from sasnet_components.utils.errors import InvalidInputError, MissingInputError, OutputExistsError
from sasnet_components.utils.io import atomic_path, atomic_write_text, sha256_file

__all__ = [
    "PACK_FORMAT",
    "CHUNKS_FORMAT",
    "encode_image",
    "decode_image",
    "pack_dataset",
    "unpack_dataset",
    "split_file",
    "join_file",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: ``format`` and ``format_version`` of a pack manifest.
PACK_FORMAT = ("sasnet-pack", 1)
#: ``format`` and ``format_version`` of a chunk manifest.
CHUNKS_FORMAT = ("sasnet-chunks", 1)
_MIB = 1 << 20
_ROLES = ("labeled", "validation", "unlabeled", "test")  # pack order
_REQUIRED_ROLES = ("labeled", "validation", "test")  # a missing case of these is refused by unpack
_UNPACK_RECORD = ".unpack-record.json"
_CODE_DTYPES = {"grid8": np.uint8, "grid16": np.uint16}


# ---------------------------------------------------------------------------------------------
# encoding of one volume
# ---------------------------------------------------------------------------------------------


def encode_image(image: np.ndarray, tolerance: float = 1e-4) -> tuple[np.ndarray, dict[str, Any]]:
    """Encode a volume as integer codes on a uniform grid when it is one, else keep it as it is.

    Args:
        image: array of any shape and real dtype (the LA scans: float32 ``(X, Y, Z)``, z-scored).
        tolerance: largest accepted ``|reconstructed - image|`` (in the image's dtype); the error
            must also stay below 1 % of the step, so values off the grid are never rounded to it.

    Returns:
        ``(payload, info)``. Grid case: ``payload`` is a uint8 (``info["encoding"] == "grid8"``,
        at most 256 levels) or uint16 (``"grid16"``) array of ``image``'s shape with
        ``image ~= offset + step * payload``; ``info`` holds ``encoding``, ``dtype`` (of ``image``),
        ``offset`` and ``step`` (floats), ``levels`` and ``max_error`` (the measured largest error).
        Otherwise ``payload`` is ``image`` itself, ``encoding == "raw"``, ``max_error == 0.0``.

    Example:
        >>> codes, info = encode_image(np.array([[-1.0, -0.5], [0.5, 1.0]], dtype=np.float32))
        >>> codes.tolist(), info["encoding"], info["offset"], info["step"]
        ([[0, 1], [3, 4]], 'grid8', -1.0, 0.5)
    """
    image = np.asarray(image)
    raw = {"encoding": "raw", "dtype": image.dtype.str, "offset": None, "step": None, "levels": None, "max_error": 0.0}
    if image.dtype.kind not in "fiu" or image.size == 0:
        return image, raw
    values = np.unique(image).astype(np.float64)
    if not np.all(np.isfinite(values)):
        return image, raw
    offset = float(values[0])
    if values.size == 1:
        step, levels = 1.0, np.zeros(1)
    else:
        step = float(np.min(np.diff(values)))
        levels = np.rint((values - offset) / step)
        if levels[-1] >= 65536:
            return image, raw
        # least-squares step through the fixed offset: the float32 rounding of each level averages out
        step = float(np.dot(levels, values - offset) / np.dot(levels, levels))
    if not step > 0:
        return image, raw
    encoding = "grid8" if levels[-1] < 256 else "grid16"
    lut = (offset + step * np.arange(int(levels[-1]) + 1)).astype(image.dtype)
    index = np.rint((values - offset) / step).astype(np.int64)
    error = float(np.max(np.abs(lut[index].astype(np.float64) - values)))
    if not error < min(tolerance, 0.01 * step):  # on the grid: every value within 1 % of a step of its level
        return image, raw
    codes = np.rint((image.astype(np.float64) - offset) / step).astype(_CODE_DTYPES[encoding])
    info = {
        "encoding": encoding,
        "dtype": image.dtype.str,
        "offset": offset,
        "step": step,
        "levels": int(levels.size),
        "max_error": error,
    }
    return codes, info


def decode_image(payload: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Invert :func:`encode_image`.

    Args:
        payload: the codes (``grid8`` / ``grid16``) or the raw array, of the volume's shape.
        info: the ``info`` of :func:`encode_image` (``encoding``, ``dtype``, ``offset``, ``step``).

    Returns:
        The volume in its dtype: ``(offset + step * payload)`` cast to ``info["dtype"]`` on a grid,
        ``payload`` unchanged when raw.

    Example:
        >>> decode_image(np.array([0, 1, 3, 4], np.uint8), {"encoding": "grid8", "dtype": "<f4",
        ...     "offset": -1.0, "step": 0.5}).tolist()
        [-1.0, -0.5, 0.5, 1.0]
    """
    if info["encoding"] == "raw":
        return payload
    lut = (float(info["offset"]) + float(info["step"]) * np.arange(1 << (8 * payload.dtype.itemsize))).astype(
        np.dtype(info["dtype"])
    )
    return lut[payload]


def _encode_label(label: np.ndarray, what: str) -> np.ndarray:
    label = np.asarray(label)
    if label.dtype.kind == "f" and not np.all(np.isfinite(label)):
        raise InvalidInputError(f"{what}: label has non-finite values; expected integers in [0, 255].")
    if label.size and (label.min() < 0 or label.max() > 255 or np.any(label != np.rint(label))):
        raise InvalidInputError(
            f"{what}: label values must be integers in [0, 255] to be stored as uint8, got values "
            f"{np.unique(label)[:10].tolist()}."
        )
    return label.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _is_within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _filters(preset: int, extreme: bool, delta: int) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = [{"id": lzma.FILTER_DELTA, "dist": int(delta)}] if delta else []
    return chain + [{"id": lzma.FILTER_LZMA2, "preset": int(preset) | (lzma.PRESET_EXTREME if extreme else 0)}]


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise MissingInputError(f"{what} '{path}' does not exist.") from e
    except ValueError as e:
        raise InvalidInputError(f"{what} '{path}' is not valid JSON ({e}).") from e


def _few(ids: Sequence[str], n: int = 10) -> str:
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return f"; left out: {list(ids[:n])}{more}"


def _workers(workers: int | None) -> int:
    return max(1, int(workers) if workers else min(8, os.cpu_count() or 1))


def _prepare_output(out: Path, inputs: Sequence[Path], ours: Any, what: str) -> None:
    """Create ``out``; refuse it when it overlaps an input, or when it is not empty and ``ours(out)`` is false."""
    for src in inputs:
        if _is_within(out, src) or _is_within(src, out):
            raise InvalidInputError(
                f"`output_dir` '{out}' must not be, lie inside or contain the input '{src}'; "
                "choose a folder outside it."
            )
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"`output_dir` '{out}' is a file; expected a folder (new or empty) for the {what}.")
    if out.is_dir() and any(out.iterdir()) and not ours(out):
        foreign = sorted(p.name for p in out.iterdir())[:5]
        raise OutputExistsError(
            f"`output_dir` '{out}' is not empty ({foreign}) and was not written by this tool; expected a new or "
            f"empty folder for the {what}, or one this tool wrote."
        )
    out.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------------------------
# pack
# ---------------------------------------------------------------------------------------------


def _case_id(item: dict[str, Any]) -> str:
    """A datalist item's case id: its ``case_id``, else its image file name without extensions."""
    return str(item.get("case_id", Path(item["image"]).name.split(".")[0]))


def _relative_path(rel: Any, what: str) -> str:
    """`rel` when it is a relative path inside the dataset folder; refuses absolute paths and ``..``."""
    path = Path(str(rel))
    if path.is_absolute() or ".." in path.parts:
        raise InvalidInputError(
            f"{what}: path {str(rel)!r} must be relative to the dataset folder, without '..' (packed datasets are "
            "unpacked into a new folder, never written outside it)."
        )
    return str(rel)


def _case_roles(datalist: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{case_id: {"roles": [...], "image": rel, "label": rel or None}}`` in pack order."""
    for role in _ROLES:
        if not isinstance(datalist.get(role, []), list):
            kind = type(datalist[role]).__name__
            raise InvalidInputError(f"datalist key {role!r} must be a list of cases, got {kind}.")
    cases: dict[str, dict[str, Any]] = {}
    for role in _ROLES:
        for item in datalist.get(role, []):
            if not isinstance(item, dict) or "image" not in item:
                raise InvalidInputError(f"datalist {role!r} entry {item!r} must be a dict with at least 'image'.")
            case_id = _case_id(item)
            for key in ("image", "label"):
                if item.get(key) is not None:
                    _relative_path(item[key], f"datalist {role!r} case {case_id!r} {key}")
            entry = cases.setdefault(case_id, {"roles": [], "image": item["image"], "label": item.get("label")})
            if entry["image"] != item["image"]:
                raise InvalidInputError(
                    f"case {case_id!r} points at two images ({entry['image']!r}, {item['image']!r}) in the datalist."
                )
            entry["roles"].append(role)
    return cases


def _pack_case(
    root: Path, case_id: str, entry: dict[str, Any], tolerance: float, filters: list, label_filters: list
) -> tuple[dict[str, Any], bytes]:
    """Read, encode and compress one case; returns its manifest record (without placement) and bytes."""
    import nibabel as nib

    record: dict[str, Any] = {"case_id": case_id, "roles": entry["roles"]}
    blobs = []
    for key in ("image", "label"):
        rel = entry[key]
        if rel is None:
            record[key] = None
            continue
        path = root / rel
        if not path.is_file():
            raise MissingInputError(f"case {case_id!r}: {key} file '{path}' named by the datalist does not exist.")
        img = nib.load(str(path))
        array = np.asarray(img.dataobj)
        info: dict[str, Any]
        if key == "image":
            payload, info = encode_image(array, tolerance)
            if info["encoding"] == "raw":
                logger.warning("case %s: image not on a uniform grid within %g; stored losslessly as %s",
                               case_id, tolerance, array.dtype)
        else:
            payload = _encode_label(array, f"case {case_id!r} ('{path}')")
            info = {"encoding": "uint8", "dtype": array.dtype.str}
        data = np.ascontiguousarray(payload).tobytes()
        blobs.append(lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters if key == "image" else label_filters))
        info.update(
            path=rel,
            shape=list(array.shape),
            payload_dtype=payload.dtype.str,
            nbytes=len(data),
            affine=np.asarray(img.affine, dtype=np.float64).tolist(),
            xyzt_units=[str(u) for u in img.header.get_xyzt_units()],
        )
        record[key] = info
    blob = b"".join(blobs)
    record["length"] = len(blob)
    record["sha256"] = hashlib.sha256(blob).hexdigest()
    return record, blob


def pack_dataset(
    dataset_dir: PathLike,
    output_dir: PathLike,
    part_size_mib: float = 48.0,
    name: str | None = None,
    datalist_name: str = "datalist.json",
    preset: int = 6,
    extreme: bool = False,
    delta: int = 1,
    tolerance: float = 1e-4,
    workers: int | None = None,
) -> dict[str, Any]:
    """Pack a prepared dataset into parts ``<name>.partNN`` and a manifest ``<name>.manifest.json``.

    Args:
        dataset_dir: prepared dataset (``datalist.json`` and the NIfTI files it names, paths
            relative to it). Never written.
        output_dir: a new or empty folder, or one holding an earlier pack written here (its parts
            and manifest are replaced). Must not overlap ``dataset_dir``.
        part_size_mib: largest size of a part in MiB (default 48: one part, ~10 MiB of wheels and
            ~1 MiB of repository fit a 64 MiB transfer). A case is never split across parts.
        name: file name stem of the parts; default the datalist's ``name`` in lower case (``la``).
        datalist_name: the datalist file in ``dataset_dir``.
        preset: lzma preset 0-9. On 5 LA scans (11.7 MiB of codes) presets 6, 9 and 9 extreme all
            gave 7.06 MiB, 9 took 1.8 times as long.
        extreme: add ``lzma.PRESET_EXTREME``.
        delta: distance of an lzma delta filter before the image codes (0: none); 1 (the default,
            neighbours along the last axis) gave 6.56 MiB instead of 7.06 MiB on the same scans.
        tolerance: largest reconstruction error accepted for the grid encoding, else raw.
        workers: threads that encode and compress cases (default: CPU count, at most 8).

    Returns:
        The manifest written (see the module docstring).

    Raises:
        FileNotFoundError: no datalist, or a file it names is missing.
        ValueError: bad arguments, overlapping folders, label values outside ``[0, 255]``, or a case
            whose compressed size exceeds ``part_size_mib``.
        FileExistsError: ``output_dir`` holds files that are not an earlier pack.
    """
    root = Path(dataset_dir).expanduser().resolve()
    if not root.is_dir():
        raise MissingInputError(
            f"`dataset_dir` '{root}' does not exist or is not a folder; expected a prepared dataset."
        )
    if not part_size_mib or float(part_size_mib) <= 0:
        raise InvalidInputError(f"`part_size_mib` must be a positive number, got {part_size_mib!r}.")
    if not 0 <= int(preset) <= 9:
        raise InvalidInputError(f"`preset` must be an integer in [0, 9] (lzma presets), got {preset!r}.")
    if not 0 <= int(delta) <= 256:
        raise InvalidInputError(f"`delta` must be an integer in [0, 256] (0: no delta filter), got {delta!r}.")
    datalist = _read_json(root / datalist_name, "datalist")
    if not isinstance(datalist, dict):
        raise InvalidInputError(f"datalist '{root / datalist_name}' must be a JSON object with the role lists.")
    cases = _case_roles(datalist)
    if not cases:
        raise InvalidInputError(f"datalist '{root / datalist_name}' names no case; expected lists {list(_ROLES)}.")
    name = name or re.sub(r"[^a-z0-9_-]", "-", str(datalist.get("name", "dataset")).lower()) or "dataset"
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", str(name)):
        raise InvalidInputError(f"`name` must be a file name stem of letters, digits, '_', '-' and '.', got {name!r}.")
    out = Path(output_dir).expanduser().resolve()
    stem = re.escape(name)
    ours = re.compile(rf"{stem}\.manifest\.json|{stem}\.part\d+|\.sasnet-tmp\..*")
    _prepare_output(out, [root], lambda d: all(ours.fullmatch(p.name) for p in d.iterdir()), "pack")
    limit = int(float(part_size_mib) * _MIB)
    manifest_path = out / f"{name}.manifest.json"
    manifest_path.unlink(missing_ok=True)  # an interrupted run must not leave a manifest of other parts
    filters = _filters(preset, extreme, delta)
    label_filters = _filters(preset, extreme, 0)
    start = time.perf_counter()

    records: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    current: list[bytes] = []

    def flush() -> None:
        if not current:
            return
        file_name = f"{name}.part{len(parts) + 1:02d}"
        digest = hashlib.sha256()
        with atomic_path(out / file_name) as tmp:
            with open(tmp, "wb") as f:
                for blob in current:
                    f.write(blob)
                    digest.update(blob)
        size = sum(len(b) for b in current)
        ids = [r["case_id"] for r in records if r["part"] == file_name]
        parts.append({"file": file_name, "size": size, "sha256": digest.hexdigest(), "cases": ids})
        logger.info("wrote %s: %d cases, %.1f MiB", file_name, len(ids), size / _MIB)
        current.clear()

    with ThreadPoolExecutor(_workers(workers)) as pool:
        jobs = [pool.submit(_pack_case, root, cid, e, tolerance, filters, label_filters) for cid, e in cases.items()]
        offset = 0
        for job in jobs:
            try:
                record, blob = job.result()
            except BaseException:
                for other in jobs:  # stop at the first refused case, not after all the others
                    other.cancel()
                raise
            if len(blob) > limit:
                raise InvalidInputError(
                    f"case {record['case_id']!r} compresses to {len(blob) / _MIB:.2f} MiB, more than "
                    f"`part_size_mib` {part_size_mib}; a case is never split, choose a larger part size."
                )
            if offset + len(blob) > limit:
                flush()
                offset = 0
            record["part"] = f"{name}.part{len(parts) + 1:02d}"
            record["offset"] = offset
            offset += len(blob)
            records.append(record)
            current.append(blob)
        flush()
    for stale in out.glob(f"{name}.part*"):
        if re.fullmatch(rf"{stem}\.part\d+", stale.name) and stale.name not in {p["file"] for p in parts}:
            stale.unlink()
    raw = [r["case_id"] for r in records if r["image"]["encoding"] == "raw"]
    manifest = {
        "format": PACK_FORMAT[0],
        "format_version": PACK_FORMAT[1],
        "name": name,
        "compression": {"codec": "xz", "preset": int(preset), "extreme": bool(extreme), "delta": int(delta)},
        "tolerance": float(tolerance),
        "part_size_bytes": limit,
        "raw_cases": raw,
        "datalist_name": datalist_name,
        "datalist": datalist,
        "parts": parts,
        "cases": records,
    }
    _write_json(manifest, manifest_path)
    total = sum(p["size"] for p in parts)
    logger.info(
        "packed %d cases (%d stored raw) into %d parts, %.1f MiB in all, in %.1f s; part 1 holds %d cases; manifest %s",
        len(records), len(raw), len(parts), total / _MIB, time.perf_counter() - start, len(parts[0]["cases"]),
        manifest_path,
    )
    return manifest


# ---------------------------------------------------------------------------------------------
# unpack
# ---------------------------------------------------------------------------------------------


def _find_manifest(sources: Sequence[Path]) -> Path:
    found = [s for s in sources if s.is_file() and s.name.endswith(".manifest.json")]
    for s in sources:
        if s.is_dir():
            found += sorted(s.glob("*.manifest.json"))
    names = sorted({str(p.resolve()) for p in found})
    if not names:
        raise MissingInputError(
            f"no pack manifest (*.manifest.json) among {[str(s) for s in sources]}; expected the folder written by "
            "pack_dataset or its manifest file."
        )
    if len(names) > 1:
        raise InvalidInputError(f"several pack manifests {names}; pass one manifest file and the parts to use.")
    return Path(names[0])


def _check_part(path: Path | None, part: dict[str, Any]) -> str | None:
    """Why the part cannot be used, or None."""
    if path is None:
        return "missing"
    size = path.stat().st_size
    if size != part["size"]:
        return f"corrupt: '{path}' has {size} bytes, expected {part['size']}"
    if sha256_file(path) != part["sha256"]:
        return f"corrupt: SHA-256 of '{path}' differs from the manifest's"
    return None


def _output_path(rel: str, gzip: bool) -> str:
    if not gzip and rel.endswith(".nii.gz"):
        return rel[: -len(".gz")]
    if gzip and rel.endswith(".nii"):
        return rel + ".gz"
    return rel


def _unpack_case(record: dict[str, Any], part_path: Path, out: Path, gzip: bool, done: dict[str, Any]) -> dict:
    """Write one case's files, skipping those an earlier run wrote from the same bytes and left intact.

    Returns:
        ``{relative path: {"source": SHA-256 of the case's packed bytes, "sha256": of the file}}``.
    """
    import nibabel as nib

    written: dict[str, str] = {}
    todo = []
    for key in ("image", "label"):
        info = record[key]
        if info is None:
            continue
        rel = _output_path(_relative_path(info["path"], f"manifest case {record['case_id']!r} {key}"), gzip)
        path = out / rel
        before = done.get(rel)
        if (
            isinstance(before, dict)
            and before.get("source") == record["sha256"]
            and path.is_file()
            and sha256_file(path) == before.get("sha256")
        ):
            written[rel] = before
        else:
            todo.append((key, info, rel))
    if not todo:
        return written
    with open(part_path, "rb") as f:
        f.seek(record["offset"])
        blob = f.read(record["length"])
    if hashlib.sha256(blob).hexdigest() != record["sha256"]:
        raise InvalidInputError(f"case {record['case_id']!r}: its bytes in '{part_path}' do not match the manifest.")
    data = lzma.decompress(blob)
    image_bytes = record["image"]["nbytes"]
    chunks = {"image": data[:image_bytes], "label": data[image_bytes:]}
    for key, info, rel in todo:
        payload = np.frombuffer(chunks[key], dtype=np.dtype(info["payload_dtype"])).reshape(info["shape"])
        array = decode_image(payload, info) if key == "image" else payload.astype(np.dtype(info["dtype"]))
        img = nib.Nifti1Image(array, np.asarray(info["affine"], dtype=np.float64))
        img.header.set_xyzt_units(*info.get("xyzt_units", ["mm", "unknown"]))
        img.header.set_data_dtype(array.dtype)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".nii.gz" if rel.endswith(".gz") else ".nii") as tmp:
            nib.save(img, str(tmp))
            written[rel] = {"source": record["sha256"], "sha256": sha256_file(tmp)}
    return written


def unpack_dataset(
    sources: PathLike | Sequence[PathLike],
    output_dir: PathLike,
    allow_partial: bool = False,
    gzip: bool = False,
    datalist_name: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Rebuild the prepared dataset from a pack, as far as its parts are present and intact.

    Args:
        sources: the pack folder, or several folders / part files / the manifest file; the manifest
            (``*.manifest.json``, exactly one) and parts are looked up among them by file name (only
            the part files and folders given count; a manifest file given alone: the parts next to it).
        output_dir: a new or empty folder, or one this function wrote (re-running verifies the files
            already written, by SHA-256, and writes only what is missing or different).
        allow_partial: write what is present even when labeled, validation or test cases are missing.
        gzip: write ``.nii.gz`` (as prepared); default uncompressed ``.nii`` (much faster). The datalist
            names what was written.
        datalist_name: file name of the datalist written (default: the packed one's, ``datalist.json``).
        workers: threads decoding cases (default: CPU count, at most 8).

    Returns:
        ``{"datalist": written datalist, "present": ids, "missing": ids, "bad_parts": {file: why},
        "seconds": float}``.

    Raises:
        FileNotFoundError: no manifest among ``sources``.
        ValueError: manifest of another format; labeled / validation / test cases missing (named)
            without ``allow_partial``; no case present at all.
        FileExistsError: ``output_dir`` holds other files.
    """
    start = time.perf_counter()
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items:
        raise InvalidInputError("`sources` is empty; expected the pack folder or its manifest and part files.")
    paths = [Path(s).expanduser().resolve() for s in items]
    for p in paths:
        if not p.exists():
            raise MissingInputError(f"pack source '{p}' does not exist; expected a pack folder, manifest or part file.")
    manifest_path = _find_manifest(paths)
    manifest = _read_json(manifest_path, "pack manifest")
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("format_version")) != PACK_FORMAT:
        raise InvalidInputError(
            f"'{manifest_path}' is not a pack manifest of format {PACK_FORMAT[0]} version {PACK_FORMAT[1]}."
        )
    out = Path(output_dir).expanduser().resolve()
    record_path = out / _UNPACK_RECORD
    _prepare_output(out, paths, lambda d: (d / _UNPACK_RECORD).is_file(), "unpacked dataset")

    # --- parts --------------------------------------------------------------------------------
    candidates: dict[str, Path] = {}
    only_manifest = all(p.is_file() and p.name.endswith(".manifest.json") for p in paths)
    for p in paths + ([manifest_path.parent] if only_manifest else []):  # parts given, else next to the manifest
        for f in [p] if p.is_file() else sorted(p.iterdir()):
            candidates.setdefault(f.name, f)
    bad: dict[str, str] = {}
    usable: dict[str, Path] = {}
    for part in manifest["parts"]:
        why = _check_part(candidates.get(part["file"]), part)
        if why is None:
            usable[part["file"]] = candidates[part["file"]]
        else:
            bad[part["file"]] = why
            logger.warning("part %s %s: its %d cases are left out", part["file"], why, len(part["cases"]))
    records = manifest["cases"]
    present = [r for r in records if r["part"] in usable]
    missing = [r for r in records if r["part"] not in usable]
    required = [r["case_id"] for r in missing if set(r["roles"]) & set(_REQUIRED_ROLES)]
    if required and not allow_partial:
        raise InvalidInputError(
            f"{len(required)} labeled / validation / test cases are in missing or corrupt parts "
            f"({'; '.join(f'{k}: {v}' for k, v in bad.items())}): {required}; bring those parts or pass "
            "allow_partial=True (--allow_partial) to unpack the rest."
        )
    if not present:
        reasons = "; ".join(f"{k}: {v}" for k, v in bad.items())
        raise InvalidInputError(f"no case can be unpacked: every part is missing or corrupt ({reasons}).")

    # --- cases --------------------------------------------------------------------------------
    done: dict[str, Any] = {}
    if record_path.is_file():
        try:
            done = json.loads(record_path.read_text()).get("files", {})
        except (OSError, ValueError, AttributeError):
            done = {}
    if not record_path.is_file():  # marks the folder as ours before any case is written
        _write_json({"manifest": str(manifest_path), "files": {}}, record_path)
    files: dict[str, Any] = {}
    with ThreadPoolExecutor(_workers(workers)) as pool:
        for result in pool.map(lambda r: _unpack_case(r, usable[r["part"]], out, gzip, done), present):
            files.update(result)
    _write_json({"manifest": str(manifest_path), "files": {**done, **files}}, record_path)
    n_kept = sum(1 for rel, entry in files.items() if done.get(rel) is entry)

    # --- datalist -----------------------------------------------------------------------------
    ids = {r["case_id"] for r in present}
    original = manifest["datalist"]
    datalist = dict(original)
    for role in _ROLES:
        if role in original:
            kept = [dict(item) for item in original[role] if _case_id(item) in ids]
            for item in kept:
                for key in ("image", "label"):
                    if key in item:
                        item[key] = _output_path(item[key], gzip)
            datalist[role] = kept
    if "num_labeled" in original:
        datalist["num_labeled"] = len(datalist.get("labeled", []))
    _write_json(datalist, out / (datalist_name or manifest.get("datalist_name", "datalist.json")))
    n_unlabeled = sum(1 for r in records if "unlabeled" in r["roles"])
    missing_unlabeled = sum(1 for r in missing if "unlabeled" in r["roles"])
    seconds = time.perf_counter() - start
    logger.info(
        "unpacked %d of %d cases into '%s' in %.1f s (%d files written, %d verified and kept); "
        "unlabeled missing: %d of %d%s",
        len(present), len(records), out, seconds, len(files) - n_kept, n_kept,
        missing_unlabeled, n_unlabeled, _few(sorted(r["case_id"] for r in missing)) if missing else "",
    )
    return {
        "datalist": datalist,
        "present": [r["case_id"] for r in present],
        "missing": [r["case_id"] for r in missing],
        "bad_parts": bad,
        "seconds": seconds,
    }


# ---------------------------------------------------------------------------------------------
# chunks of one file
# ---------------------------------------------------------------------------------------------


def split_file(path: PathLike, output_dir: PathLike, chunk_mib: float = 15.0) -> dict[str, Any]:
    """Cut a file into ``<name>.chunkNN`` of at most ``chunk_mib`` MiB plus ``<name>.chunks.json``.

    Args:
        path: the file (e.g. a trained model larger than a transfer's file limit).
        output_dir: folder for the chunks (created; earlier chunks of the same name are replaced).
        chunk_mib: largest chunk size in MiB (default 15, under a 16 MiB limit per returned file).

    Returns:
        The chunk manifest: ``format``, ``format_version``, ``file`` (name), ``size``, ``sha256``,
        ``chunk_size`` and ``chunks`` (``file``, ``size``, ``sha256`` each).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: ``chunk_mib`` not positive.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise MissingInputError(f"file to split '{src}' does not exist or is not a file.")
    if not chunk_mib or float(chunk_mib) <= 0:
        raise InvalidInputError(f"`chunk_mib` must be a positive number, got {chunk_mib!r}.")
    size = int(float(chunk_mib) * _MIB)
    out = Path(output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    chunks = []
    with open(src, "rb") as f:
        while True:
            data = f.read(size)
            if not data and chunks:
                break
            whole.update(data)
            name = f"{src.name}.chunk{len(chunks) + 1:02d}"
            with atomic_path(out / name) as tmp:
                tmp.write_bytes(data)
            chunks.append({"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            if len(data) < size:
                break
    for stale in out.glob(f"{src.name}.chunk*"):
        ours = re.fullmatch(rf"{re.escape(src.name)}\.chunk\d+", stale.name)
        if ours and stale.name not in {c["file"] for c in chunks}:
            stale.unlink()
    manifest = {
        "format": CHUNKS_FORMAT[0],
        "format_version": CHUNKS_FORMAT[1],
        "file": src.name,
        "size": sum(c["size"] for c in chunks),
        "sha256": whole.hexdigest(),
        "chunk_size": size,
        "chunks": chunks,
    }
    _write_json(manifest, out / f"{src.name}.chunks.json")
    logger.info("split '%s' (%d bytes) into %d chunks in '%s'", src, manifest["size"], len(chunks), out)
    return manifest


def join_file(manifest_path: PathLike, output_path: PathLike) -> Path:
    """Join the chunks listed by a ``<name>.chunks.json`` (looked up next to it) into ``output_path``.

    Every chunk's size and SHA-256 and the whole file's SHA-256 are checked before the file is moved
    into place, so ``output_path`` is either left as it was or holds the verified file.

    Args:
        manifest_path: the chunk manifest written by :func:`split_file`.
        output_path: the file to write (a folder: the original name inside it).

    Returns:
        The path written.

    Raises:
        FileNotFoundError: the manifest or a chunk is missing (the chunk is named).
        ValueError: a chunk's size or SHA-256 differs (named), or the manifest is of another format.
    """
    manifest_path = Path(manifest_path).expanduser()
    manifest = _read_json(manifest_path, "chunk manifest")
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("format_version")) != CHUNKS_FORMAT:
        raise InvalidInputError(
            f"'{manifest_path}' is not a chunk manifest of format {CHUNKS_FORMAT[0]} version {CHUNKS_FORMAT[1]}."
        )
    target = Path(output_path).expanduser()
    if target.is_dir():
        target = target / manifest["file"]
    target.parent.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            for chunk in manifest["chunks"]:
                path = manifest_path.parent / chunk["file"]
                if not path.is_file():
                    raise MissingInputError(
                        f"chunk '{chunk['file']}' of '{manifest['file']}' is missing (expected '{path}'); "
                        "nothing written."
                    )
                data = path.read_bytes()
                if len(data) != chunk["size"] or hashlib.sha256(data).hexdigest() != chunk["sha256"]:
                    raise InvalidInputError(
                        f"chunk '{path}' is corrupt: {len(data)} bytes (expected {chunk['size']}) or SHA-256 differs "
                        "from the manifest's; nothing written."
                    )
                whole.update(data)
                f.write(data)
        if whole.hexdigest() != manifest["sha256"]:
            raise InvalidInputError(f"the joined '{manifest['file']}' does not match the SHA-256 of the manifest.")
    n_chunks = len(manifest["chunks"])
    logger.info("joined %d chunks into '%s' (%d bytes, SHA-256 verified)", n_chunks, target, manifest["size"])
    return target
