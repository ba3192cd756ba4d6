"""Shared core of dataset preparation: cases in, NIfTI volumes, a manifest and a semi-supervised datalist out.

Each dataset adds a *reader*: a small :class:`CaseReader` subclass that knows where the cases of
its layout lie (:meth:`CaseReader.find_cases`) and turns ONE case into arrays
(:meth:`CaseReader.read_case`). :func:`prepare_cases` does everything else, the same way for every
dataset:

- refuses an ``output_dir`` that is, lies inside or contains ``input_dir`` (the input is never written);
- refuses, before any file is written, to replace a datalist it did not write (or that was edited
  since): its SHA-256 must be the one recorded in the manifest, unless ``overwrite``;
- writes ``images{Tr,Ts}/<id>.nii.gz`` and ``labels{Tr,Ts}/<id>.nii.gz`` atomically (temporary
  name, then ``os.replace``), with the affine ``diag(spacing, 1)`` unless the reader gives one;
- records each case in ``manifest.json`` (source, its size and mtime, the reader's
  :attr:`~CaseReader.parameters`, output shape, spacing, SHA-256 of each file) and skips, on a
  re-run, a case whose files still match the record for the same source stamp and parameters;
- refuses a case that cannot be used (the reader raises ``OSError`` / ``ValueError`` /
  ``KeyError``, non-finite voxels, label shape not that of the image) with a message naming the
  case, prepares all the others, then raises a ``ValueError`` naming every refused case and writes
  no datalist (an existing one is left as it was);
- warns when the spacing differs between cases, and writes the datalist (:func:`build_datalist`).

Reader interface (subclass :class:`CaseReader`; only :meth:`~CaseReader.find_cases` and
:meth:`~CaseReader.read_case` are required)::

    name: str                  # dataset name written as the datalist's "name", e.g. "LA"
    layout: str                # source layout, written as "source_layout" (datalist and manifest)
    parameters -> dict         # JSON values that change the output (e.g. {"seed": 0}); a change
                               # rewrites every case. Default {}.
    default_ids(root) -> (train_ids, test_ids)           # ids when the caller gives no list
                                                          # (default: MissingInputError)
    find_cases(root, train_ids, test_ids) -> (sources, missing_test_ids)
        # one CaseSource per present case, train cases first, in list order; raise
        # MissingInputError (a FileNotFoundError) naming id and expected path for a train id
        # without data; test ids without data are returned in missing_test_ids.
    read_case(source) -> CaseData(image, label, spacing, extra={}, affine=None)
        # image: (X, Y, Z) or (X, Y, Z, C) array, written with its dtype (float32 advised);
        # label: (X, Y, Z) integer array (uint8 advised), or None for an unlabeled case;
        # spacing: 3 positive floats (mm); extra: JSON fields added to the manifest record;
        # affine: optional 4x4 array used instead of diag(spacing, 1).
        # Raise OSError / ValueError / KeyError for a case that cannot be used, naming the case
        # (sasnet_components.data.checks.read_error helps); the core adds the case id otherwise.

A minimal reader, for ``<root>/<id>/image.npy`` + ``label.npy`` at 1 mm::

    class NpyReader(CaseReader):
        name, layout = "Toy", "npy"

        def find_cases(self, root, train_ids, test_ids):
            sources, missing = [], []
            for split, ids in (("train", train_ids), ("test", test_ids)):
                for case_id in ids:
                    path = root / case_id / "image.npy"
                    if path.is_file():
                        sources.append(CaseSource(case_id, split, path))
                    elif split == "train":
                        raise MissingInputError(f"case '{case_id}' has no data: expected '{path}'.")
                    else:
                        missing.append(case_id)
            return sources, missing

        def read_case(self, source):
            image = np.load(source.path).astype(np.float32)
            label = np.load(source.path.with_name("label.npy")).astype(np.uint8)
            return CaseData(image, label, (1.0, 1.0, 1.0))

    reader = NpyReader()
    train_ids, test_ids = read_id_lists(reader, "/data/toy")  # train.list / test.list, or the reader's default
    datalist = prepare_cases(reader, "/data/toy", "data/toy", train_ids, test_ids, num_labeled=4, num_validation=2)

A reader whose cases depend on a setting (a seed, a target spacing ...) returns it in
``parameters``; one whose case spans several files lists them all in ``CaseSource.stamp`` so that
a change to any of them rewrites the case.

Output (``output_dir``)::

    imagesTr/<id>.nii.gz  labelsTr/<id>.nii.gz   (training cases; no label file for a label of None)
    imagesTs/<id>.nii.gz  labelsTs/<id>.nii.gz   (test cases that are present)
    datalist.json         see build_datalist; paths relative to its folder
    manifest.json         {"version": 2, "cases": {id: record}, "datalists": {name: SHA-256}}

A manifest record holds, in order: ``split``, ``source`` (the CaseSource path), ``source_layout``,
``source_size``, ``source_mtime_ns``, ``image``, ``label`` (paths relative to ``output_dir``;
``label`` None without label), the reader's ``parameters``, its ``extra`` fields, ``shape``,
``spacing``, ``image_sha256``, ``label_sha256``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import nibabel as nib
import numpy as np
from tqdm import tqdm

from sasnet_components.data.checks import exception_message, nonfinite_message, read_error
from sasnet_components.utils.console import log_above_bars
from sasnet_components.utils.errors import InvalidInputError, MissingInputError, OutputExistsError, UnknownKeyError
from sasnet_components.utils.io import atomic_path, atomic_write_text, sha256_file

__all__ = [
    "MANIFEST_VERSION",
    "CaseData",
    "CaseReader",
    "CaseSource",
    "build_datalist",
    "check_finite",
    "prepare_cases",
    "read_h5_pair",
    "read_id_list",
    "read_id_lists",
    "resolve_folders",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# 2: non-finite voxels are refused (outputs of version 1 are checked again), datalist checksums recorded
MANIFEST_VERSION = 2
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class CaseSource:
    """Where one case lies.

    Attributes:
        case_id: the id used for the output file names and in the datalist.
        split: ``"train"`` (from the training list) or ``"test"``.
        path: the case's file or folder, recorded as the manifest's ``source`` and given back to
            :meth:`CaseReader.read_case`.
        stamp: the file(s) whose size and mtime stand for the source: a change rewrites the case.
            Empty means ``(path,)`` (``path`` must then be a file). One file is recorded as
            ``source_size`` / ``source_mtime_ns`` integers, several as lists in this order.
    """

    case_id: str
    split: str
    path: Path
    stamp: tuple[Path, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.split not in _SPLITS:
            raise InvalidInputError(
                f"`split` of case '{self.case_id}' must be one of {list(_SPLITS)}, got {self.split!r}."
            )
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "stamp", tuple(Path(p) for p in self.stamp))

    def stamp_fields(self) -> dict[str, Any]:
        """``{"source_size": ..., "source_mtime_ns": ...}`` of the stamp file(s), as recorded in the manifest."""
        stats = [p.stat() for p in (self.stamp or (self.path,))]
        if len(stats) == 1:
            return {"source_size": stats[0].st_size, "source_mtime_ns": stats[0].st_mtime_ns}
        return {"source_size": [s.st_size for s in stats], "source_mtime_ns": [s.st_mtime_ns for s in stats]}


class CaseData(NamedTuple):
    """One case as a reader returns it (see the module docstring for shapes and dtypes)."""

    image: np.ndarray
    label: Optional[np.ndarray]
    spacing: Sequence[float]
    extra: dict = {}
    affine: Optional[np.ndarray] = None


class CaseReader:
    """Base class of the readers plugged into :func:`prepare_cases` (interface in the module docstring).

    Attributes:
        name: dataset name, the datalist's ``"name"``.
        layout: source layout, the datalist's and the manifest's ``"source_layout"``.
    """

    name: str = ""
    layout: str = ""

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters recorded per case; a case prepared with others is rewritten."""
        return {}

    def default_ids(self, root: Path) -> tuple[list[str], list[str]]:
        """``(train_ids, test_ids)`` to use when the caller gives no list; by default there are none."""
        raise MissingInputError(f"no case id list given for '{root}', and the {self.name} reader has no default ids.")

    def find_cases(
        self, root: Path, train_ids: Sequence[str], test_ids: Sequence[str]
    ) -> tuple[list[CaseSource], list[str]]:
        """Locate the listed cases under ``root``.

        Returns:
            ``(sources, missing_test_ids)``: sources of the present cases, training cases first, in list order.

        Raises:
            FileNotFoundError: a training id has no data (name the id and the expected path).
        """
        raise NotImplementedError

    def read_case(self, source: CaseSource) -> CaseData:
        """Read (and preprocess) one case.

        Raises:
            OSError, ValueError, KeyError: the case cannot be used; the message should name the case.
        """
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# id lists and folders
# ---------------------------------------------------------------------------------------------


def read_id_list(path: PathLike) -> list[str]:
    """Read case ids, one per line; surrounding whitespace and empty lines are ignored.

    Args:
        path: a ``train.list`` / ``test.list`` style text file.

    Returns:
        The ids in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an id appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"case id list '{path}' does not exist.")
    ids = [line.strip() for line in path.read_text().splitlines()]
    ids = [i for i in ids if i]
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise InvalidInputError(f"case id list '{path}' must not repeat ids, got duplicates {dups}.")
    return ids


def read_id_lists(
    reader: CaseReader,
    root: PathLike,
    train_list: PathLike | None = None,
    test_list: PathLike | None = None,
    log: logging.Logger | None = None,
) -> tuple[list[str], list[str]]:
    """The training and test ids: from the given lists, else ``<root>/train.list`` / ``test.list``,
    else the reader's :meth:`~CaseReader.default_ids`.

    Args:
        reader: asked for its default ids when there is no training list.
        root: dataset root.
        train_list: training id list (one id per line); default ``<root>/train.list``.
        test_list: test id list; default ``<root>/test.list``, else the reader's default test ids
            when the training ids are the reader's too, else none.
        log: logger for what was found (default: this module's).

    Returns:
        ``(train_ids, test_ids)`` in list order.

    Raises:
        FileNotFoundError: a given list does not exist, or there is no training list and the reader
            has no default ids.
        ValueError: a list repeats an id, or the training ids are empty.
    """
    log = log or logger
    root = Path(root)
    train_path = Path(train_list) if train_list is not None else root / "train.list"
    test_path = Path(test_list) if test_list is not None else root / "test.list"
    default_test: list[str] = []
    if train_path.is_file():
        train_ids = read_id_list(train_path)
        log.info("train list '%s': %d ids", train_path, len(train_ids))
    else:
        missing = MissingInputError(
            f"training id list '{train_path}' does not exist; the {reader.layout} layout needs a train.list "
            "(one case id per line) in `input_dir` or passed as `train_list`."
        )
        if train_list is not None:
            raise missing
        try:
            train_ids, default_test = (list(ids) for ids in reader.default_ids(root))
        except MissingInputError as e:
            raise missing from e
        log.info(
            "no train.list in '%s' and no --train_list given: using the %d training and %d test cases the %s %s "
            "reader finds, sorted by id",
            root,
            len(train_ids),
            len(default_test),
            reader.name,
            reader.layout,
        )
    if not train_ids:
        raise InvalidInputError(f"training id list '{train_path}' is empty.")
    if test_path.is_file():
        test_ids = read_id_list(test_path)
    elif test_list is not None:
        raise MissingInputError(f"`test_list` '{test_path}' does not exist.")
    else:
        test_ids = default_test
        if not test_ids:
            log.info("no test list at '%s': the test split will be empty", test_path)
    return train_ids, test_ids


def _is_within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def resolve_folders(
    input_dir: PathLike, output_dir: PathLike, layouts_help: str = "", name: str = "input_dir"
) -> tuple[Path, Path]:
    """Resolve the input and output folders and check that they do not overlap (nothing is created).

    Args:
        input_dir: dataset root; must be an existing folder.
        output_dir: destination; must not be, contain or lie inside ``input_dir``.
        layouts_help: text appended to the message of a missing ``input_dir`` (expected layouts).
        name: how messages name the input folder (the caller's option).

    Returns:
        ``(input_dir, output_dir)`` as absolute resolved paths.

    Raises:
        FileNotFoundError: ``input_dir`` is not a folder.
        ValueError: the folders overlap.
    """
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise MissingInputError(
            f"`{name}` '{root}' does not exist or is not a directory"
            + (f"; {layouts_help}." if layouts_help else ".")
        )
    root = root.resolve()
    out = Path(output_dir).expanduser().resolve()
    if _is_within(out, root) or _is_within(root, out):
        raise InvalidInputError(
            f"`output_dir` '{out}' must not be, lie inside or contain `{name}` '{root}'; "
            "choose an output folder outside the input dataset."
        )
    return root, out


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def read_h5_pair(path: PathLike, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``image`` and ``label`` datasets of a community h5 case file, as stored (readers check them).

    Args:
        path: the h5 file.
        case_id: named in error messages.

    Returns:
        ``(image, label)`` numpy arrays.

    Raises:
        KeyError: ``image`` or ``label`` is missing (names the case, the file and what is missing).
        ValueError: the file cannot be read (not HDF5, damaged), with h5py's reason.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise UnknownKeyError(f"case '{case_id}': '{path}' must hold datasets 'image' and 'label', missing {missing}.")
            return np.asarray(f["image"][()]), np.asarray(f["label"][()])
    except OSError as e:  # h5py's error for a file that is not HDF5 or is damaged
        raise read_error(f"case '{case_id}': cannot read '{path}'", e) from e


def check_finite(case_id: str, where: PathLike, **arrays: Optional[np.ndarray]) -> None:
    """Refuse non-finite voxels: readers that transform the data call it on the arrays they read.

    Args:
        case_id: named in the message.
        where: the case's file or folder, named in the message.
        **arrays: ``name=array``; ``None`` values are skipped.

    Raises:
        ValueError: ``"case '<id>': <name> has <n> non-finite voxels (<a> NaN, <b> infinite) of <size>
            in '<where>'; expected finite values."``.
    """
    for name, array in arrays.items():
        problem = None if array is None else nonfinite_message(array)
        if problem is not None:
            raise InvalidInputError(f"case '{case_id}': {name} has {problem} in '{where}'; expected finite values.")


def _check_case(source: CaseSource, data: CaseData) -> None:
    """Checks of every reader's output: finite values, label shape, spacing."""
    image, label = np.asarray(data.image), data.label
    check_finite(source.case_id, source.path, image=image, label=label)
    if image.ndim not in (3, 4):
        raise InvalidInputError(
            f"case '{source.case_id}': image must be (X, Y, Z) or (X, Y, Z, C), got shape {tuple(image.shape)} "
            f"from '{source.path}'."
        )
    if label is not None and tuple(np.shape(label)) != tuple(image.shape[:3]):
        raise InvalidInputError(
            f"case '{source.case_id}': label shape {tuple(np.shape(label))} must be the image's spatial shape "
            f"{tuple(image.shape[:3])} in '{source.path}'."
        )
    spacing = np.asarray(data.spacing, dtype=np.float64)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or not np.all(spacing > 0):
        raise InvalidInputError(
            f"case '{source.case_id}': spacing must be 3 positive finite numbers (mm), got {list(data.spacing)} "
            f"for '{source.path}'."
        )


# ---------------------------------------------------------------------------------------------
# datalist
# ---------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _entry(case_id: str, split: str, with_label: bool = True) -> dict[str, str]:
    suffix = "Tr" if split == "train" else "Ts"
    entry = {"case_id": case_id, "image": f"images{suffix}/{case_id}.nii.gz"}
    if with_label:
        entry["label"] = f"labels{suffix}/{case_id}.nii.gz"
    return entry


def build_datalist(
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    num_labeled: int,
    num_validation: int,
    spacing: Sequence[float],
    source_layout: str,
    num_test_listed: int | None = None,
    *,
    name: str,
    without_label: Sequence[str] = (),
    train_list_name: str = "train.list",
    test_list_name: str = "test.list",
) -> dict[str, Any]:
    """Build a semi-supervised datalist (paths relative to the datalist's folder).

    Args:
        train_ids: training ids in list order.
        test_ids: test ids whose data is present, in order.
        num_labeled: labeled = first ``num_labeled`` training ids; the rest are unlabeled.
        num_validation: validation = last ``num_validation`` training ids, a monitoring list whose
            ids stay in the unlabeled pool. 0 gives an empty list.
        spacing: voxel spacing in mm (3 values).
        source_layout: the reader's layout.
        num_test_listed: number of listed test ids (for the note), default ``len(test_ids)``.
        name: dataset name.
        without_label: ids that have no label: their entries have no ``"label"`` key; they must
            not be labeled or validation ids.
        train_list_name: how the note names the training list.
        test_list_name: how the note names the test list.

    Returns:
        ``{"name", "spacing", "source_layout", "num_labeled", "protocol_note", "labeled",
        "unlabeled", "validation", "test"}``; each list holds ``{"case_id", "image", "label"}``
        entries (``images{Tr,Ts}/<id>.nii.gz``, ``labels{Tr,Ts}/<id>.nii.gz``).

    Raises:
        ValueError: ``num_labeled`` is not in ``[1, len(train_ids)]``, ``num_validation`` is not in
            ``[0, len(train_ids)]``, or a labeled / validation id has no label.
    """
    n_train = len(train_ids)
    if not _is_int(num_labeled) or not 1 <= num_labeled <= n_train:
        raise InvalidInputError(
            f"`num_labeled` must be an integer in [1, {n_train}] (the number of training cases), got {num_labeled}."
        )
    if not _is_int(num_validation) or not 0 <= num_validation <= n_train:
        raise InvalidInputError(
            f"`num_validation` must be an integer in [0, {n_train}] (the number of training cases), "
            f"got {num_validation}."
        )
    num_labeled, num_validation = int(num_labeled), int(num_validation)
    no_label = set(without_label)
    needing = [i for i in list(train_ids[:num_labeled]) + list(train_ids[n_train - num_validation :]) if i in no_label]
    if needing:
        raise InvalidInputError(
            f"labeled and validation cases need a label, got none for {sorted(set(needing))[:5]}; put cases "
            f"without a label after the first {num_labeled} and before the last {num_validation} of "
            f"{train_list_name}."
        )
    labeled = [_entry(i, "train") for i in train_ids[:num_labeled]]
    unlabeled = [_entry(i, "train", i not in no_label) for i in train_ids[num_labeled:]]
    validation = [_entry(i, "train") for i in train_ids[n_train - num_validation :]]
    test = [_entry(i, "test", i not in no_label) for i in test_ids]
    n_listed = len(test_ids) if num_test_listed is None else int(num_test_listed)
    overlap = n_train - num_validation < num_labeled
    note = (
        f"Default (honest) protocol: labeled = first {num_labeled} ids of {train_list_name}, unlabeled = the "
        f"remaining {n_train - num_labeled} (their label paths are kept only for re-splitting and are "
        f"never read in training). validation = last {num_validation} ids of {train_list_name}, a monitoring "
        "list whose labels only the validation loader reads; these ids ALSO stay in the unlabeled pool, "
        "so report the final model; to select a checkpoint on them, remove them from the unlabeled pool "
        f"first. test = the {len(test_ids)} of {n_listed} {test_list_name} ids whose data is present; never "
        "tune anything on them."
    )
    if overlap:
        note += " WARNING: the validation ids overlap the labeled ids."
    return {
        "name": name,
        "spacing": [float(s) for s in spacing],
        "source_layout": source_layout,
        "num_labeled": num_labeled,
        "protocol_note": note,
        "labeled": labeled,
        "unlabeled": unlabeled,
        "validation": validation,
        "test": test,
    }


# ---------------------------------------------------------------------------------------------
# files and manifest
# ---------------------------------------------------------------------------------------------


def _atomic_save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> str:
    """Write ``array`` as NIfTI with ``affine`` atomically; return its SHA-256."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_data_dtype(array.dtype)
    with atomic_path(path, suffix="".join(path.suffixes)) as tmp:  # nibabel picks the format by suffix
        nib.save(img, str(tmp))
        digest = sha256_file(tmp)
    return digest


def _atomic_write_json(obj: Any, path: Path) -> str:
    """Write ``obj`` as indented JSON atomically; return the SHA-256 of the file."""
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write_text(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load_manifest(path: Path, log: logging.Logger) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``cases`` and ``datalists`` records of a manifest; empty when missing, unreadable or of another version."""
    if not path.is_file():
        return {}, {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable manifest '%s'; all cases will be rewritten", path)
        return {}, {}
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        return {}, {}
    cases, datalists = data.get("cases"), data.get("datalists")
    return (cases if isinstance(cases, dict) else {}), (datalists if isinstance(datalists, dict) else {})


def _is_complete(entry: dict[str, Any] | None, expected: dict[str, Any], out_dir: Path) -> bool:
    """Whether a manifest entry describes the same source and parameters, with intact output files."""
    if not entry or any(entry.get(k) != v for k, v in expected.items()):
        return False
    for key in ("image", "label"):
        if key == "label" and entry.get("label", "") is None:  # a case without label
            continue
        f = out_dir / entry.get(key, "")
        if not f.is_file() or sha256_file(f) != entry.get(f"{key}_sha256"):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# main entry point
# ---------------------------------------------------------------------------------------------


def prepare_cases(
    reader: CaseReader,
    input_dir: PathLike,
    output_dir: PathLike,
    train_ids: Sequence[str] | None,
    test_ids: Sequence[str] | None,
    num_labeled: int,
    num_validation: int,
    overwrite: bool = False,
    datalist_name: str = "datalist.json",
    progress: bool = False,
    *,
    num_test_listed: int | None = None,
    program: str = "prepare_cases",
    train_list_name: str = "train.list",
    test_list_name: str = "test.list",
    log: logging.Logger | None = None,
) -> dict[str, Any]:
    """Prepare the listed cases with ``reader`` and write the datalist (see the module docstring).

    Args:
        reader: the dataset's :class:`CaseReader`.
        input_dir: dataset root, never written.
        output_dir: destination; must not be, contain or lie inside ``input_dir``. Created if needed.
        train_ids: training ids in order (labeled first); ``None``: ``reader.default_ids(input_dir)``.
        test_ids: test ids (may be empty); ``None`` with ``train_ids=None``: the reader's default,
            else no test case.
        num_labeled: labeled = first ``num_labeled`` training ids.
        num_validation: validation = last ``num_validation`` training ids (they stay unlabeled too).
        overwrite: rewrite every case even when complete, and replace a datalist not written here.
        datalist_name: file name of the datalist in ``output_dir``.
        progress: show a progress bar of the cases on stderr.
        num_test_listed: number of listed test ids for the protocol note, default ``len(test_ids)``
            (give it when the caller already left out ids).
        program: the name the datalist refusal gives the writer, e.g. ``"prepare_la"``.
        train_list_name: how messages and the note name the training list.
        test_list_name: how messages and the note name the test list.
        log: logger for the progress messages (default: this module's).

    Returns:
        The datalist written to ``output_dir / datalist_name`` (see :func:`build_datalist`).

    Raises:
        FileNotFoundError: ``input_dir`` is missing; a training id has no data (from the reader).
        FileExistsError: the datalist exists, was not written here (or was edited since) and
            ``overwrite`` is false; raised before any file is written.
        ValueError: the folders overlap; no training id; an id in both lists; bad split numbers;
            after all other cases are prepared, one or more cases were refused (the message names
            each case and why; no datalist is written).
    """
    log = log or logger
    root, out = resolve_folders(input_dir, output_dir)
    if train_ids is None:
        default_train, default_test = reader.default_ids(root)
        train_ids = default_train
        test_ids = default_test if test_ids is None else test_ids
    train_ids, test_ids = list(train_ids), list(test_ids or [])
    if not train_ids:
        raise InvalidInputError(f"the training id list ({train_list_name}) is empty.")
    for ids, what in ((train_ids, train_list_name), (test_ids, test_list_name)):
        dups = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dups:
            raise InvalidInputError(f"{what} must not repeat ids, got duplicates {dups[:5]}.")
    both = sorted(set(train_ids) & set(test_ids))
    if both:
        raise InvalidInputError(f"ids must not be in both the training and the test list, got {both[:5]} in both.")
    n_listed = len(test_ids) if num_test_listed is None else int(num_test_listed)
    # validate the split numbers and the datalist's destination before any file is written
    build_datalist(train_ids, [], num_labeled, num_validation, (1.0, 1.0, 1.0), reader.layout, name=reader.name)
    manifest_path = out / "manifest.json"
    recorded_cases, recorded_datalists = _load_manifest(manifest_path, log)
    datalist_path = out / datalist_name
    if (
        not overwrite
        and datalist_path.exists()
        and (not datalist_path.is_file() or sha256_file(datalist_path) != recorded_datalists.get(datalist_name))
    ):
        raise OutputExistsError(
            f"'{datalist_path}' exists and was not written by {program} (its SHA-256 is not the one recorded in "
            f"'{manifest_path}': written by someone else or by an older version, or edited since); pass --overwrite "
            "(overwrite=True) to replace it (it also rewrites every case), or choose another --datalist_name or "
            "--output_dir."
        )

    # --- locate cases -------------------------------------------------------------------------
    sources, missing_test = reader.find_cases(root, train_ids, test_ids)
    sources = list(sources)
    present_test = [s.case_id for s in sources if s.split == "test"]
    found_train = [s.case_id for s in sources if s.split == "train"]
    if found_train != train_ids:
        raise InvalidInputError(
            f"reader {type(reader).__name__} must return one source per training id, in order; "
            f"missing {sorted(set(train_ids) - set(found_train))[:5]}."
        )
    log.info(
        "test list: %d ids, %d present, %d missing%s",
        len(test_ids),
        len(present_test),
        len(missing_test),
        " (the test split holds only the present ones)" if missing_test else "",
    )

    # --- write cases --------------------------------------------------------------------------
    for sub in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if present_test else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest = {} if overwrite else recorded_cases
    written = skipped = 0
    spacings: dict[str, list[float]] = {}
    refused: dict[str, str] = {}
    parameters = dict(reader.parameters)

    def save_manifest() -> None:
        content = {"version": MANIFEST_VERSION, "cases": manifest, "datalists": recorded_datalists}
        _atomic_write_json(content, manifest_path)

    if progress:
        log_above_bars()
    for source in tqdm(sources, desc="preparing", unit="case", leave=False, disable=not progress):
        case_id, split = source.case_id, source.split
        entry = _entry(case_id, split)
        expected = {"split": split, "source": str(source.path), "source_layout": reader.layout}
        try:
            expected.update(source.stamp_fields())
        except OSError as e:
            refused[case_id] = f"case '{case_id}': cannot read the size and time of '{source.path}': {e}"
            log.error("case %s (%s) refused: %s", case_id, split, refused[case_id])
            continue
        expected["image"] = entry["image"]
        if not overwrite and _is_complete(manifest.get(case_id), {**expected, **parameters}, out):
            skipped += 1
            spacings[case_id] = manifest[case_id]["spacing"]
            log.debug("case %s: complete output found, skipped", case_id)
            continue
        try:
            data = reader.read_case(source)
            if not isinstance(data, CaseData):
                data = CaseData(*data)
            _check_case(source, data)
        except (OSError, ValueError, KeyError) as e:
            message = exception_message(e)
            if f"'{case_id}'" not in message:
                message = f"case '{case_id}' ('{source.path}'): {message}"
            refused[case_id] = message
            log.error("case %s (%s) refused: %s", case_id, split, refused[case_id])
            continue
        image, label = data.image, data.label
        spacing = [float(s) for s in data.spacing]
        affine = np.diag(spacing + [1.0]) if data.affine is None else np.asarray(data.affine, dtype=np.float64)
        record = dict(expected)
        record["label"] = None if label is None else entry["label"]
        record.update(parameters)
        record.update(data.extra or {})
        record["shape"] = list(np.shape(image))
        record["spacing"] = spacing
        record["image_sha256"] = _atomic_save_nifti(image, affine, out / entry["image"])
        record["label_sha256"] = None if label is None else _atomic_save_nifti(label, affine, out / entry["label"])
        manifest[case_id] = record
        spacings[case_id] = spacing
        written += 1
        save_manifest()
        log.info("case %s (%s): wrote shape %s", case_id, split, tuple(np.shape(image)))
    save_manifest()
    log.info(
        "cases: %d written, %d skipped (complete output already present), %d refused", written, skipped, len(refused)
    )
    if refused:
        kept = " (the existing one is left as it was)" if datalist_path.exists() else ""
        raise InvalidInputError(
            f"{len(refused)} of {len(sources)} cases refused, {datalist_name} not written{kept}: "
            + "; ".join(message.rstrip(".") for message in refused.values())
            + f". Fix or replace these files, or remove their ids from {train_list_name} / {test_list_name}, and run "
            "again (prepared cases are kept and skipped)."
        )

    # --- datalist -----------------------------------------------------------------------------
    spacing0 = spacings[train_ids[0]]
    differing = sorted(i for i, s in spacings.items() if not np.allclose(s, spacing0))
    if differing:
        log.warning(
            "spacing differs between cases (datalist records %s from case %s; differing: %s); each "
            "NIfTI affine holds its own case's spacing",
            spacing0,
            train_ids[0],
            differing[:5],
        )
    without_label = [s.case_id for s in sources if manifest[s.case_id].get("label", "") is None]
    datalist = build_datalist(
        train_ids,
        present_test,
        num_labeled,
        num_validation,
        spacing0,
        reader.layout,
        n_listed,
        name=reader.name,
        without_label=without_label,
        train_list_name=train_list_name,
        test_list_name=test_list_name,
    )
    recorded_datalists[datalist_name] = _atomic_write_json(datalist, datalist_path)
    save_manifest()
    log.info(
        "datalist: labeled %d / unlabeled %d / validation %d (also in unlabeled) / test %d (%d test ids missing)",
        len(datalist["labeled"]),
        len(datalist["unlabeled"]),
        len(datalist["validation"]),
        len(datalist["test"]),
        len(missing_test),
    )
    log.info("wrote '%s'; volumes in '%s' and '%s'", datalist_path, out / "imagesTr", out / "labelsTr")
    return datalist
