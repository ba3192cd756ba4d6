"""Image loading that names the case: MONAI's ``LoadImaged`` plus clear read errors and a non-finite check."""

from __future__ import annotations

from typing import Any, Hashable, Mapping

from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

from sasnet_components.data.checks import exception_message, nonfinite_message, read_error
from sasnet_components.utils.errors import InvalidInputError, UnknownKeyError

__all__ = ["CheckedLoadImaged"]


class CheckedLoadImaged(LoadImaged):
    """:class:`monai.transforms.LoadImaged` that names the case, key and path of a file it cannot use.

    Usable in place of ``LoadImaged`` in a bundle config, with the same arguments. Differences:

    - a file that cannot be read (missing, truncated ``.nii.gz``, not an image ...) raises an error
      naming the case id, the key, the path and the reader's reason, e.g. ``case 'LA003': cannot
      read image '/x/LA003.nii.gz': Compressed file ended before the end-of-stream marker was
      reached (EOFError)``: ``FileNotFoundError`` / ``PermissionError`` when the reader raised one,
      ``ValueError`` otherwise;
    - a loaded volume with NaN or infinite voxels raises ``ValueError`` naming the case, the key,
      the path and the count, e.g. ``case 'LA003': image '/x/LA003.nii.gz' has 8 non-finite voxels
      (8 NaN, 0 infinite) of 1000; expected finite intensities``;
    - a missing key (without ``allow_missing_keys``) raises MONAI's ``KeyError`` prefixed with the case.

    Keys missing from a sample are skipped when ``allow_missing_keys`` is true (unlabeled samples
    have no ``label``). MONAI's ``Compose`` and datasets wrap any exception of a transform in
    ``RuntimeError("applying transform ...")``; the message above is that error's direct cause,
    printed first in the traceback.

    Args:
        keys: keys of the file paths to load, as for ``LoadImaged``.
        args: the other positional arguments of ``LoadImaged`` (reader, dtype, meta_keys, ...).
        case_key: key of the case id used in messages (the datalists' ``"case_id"``); samples
            without it are named by their paths only.
        finite_keys: keys whose volumes must hold finite values only; a subset of `keys`, default
            all of them (integer volumes such as labels always pass).
        kwargs: the other keyword arguments of ``LoadImaged`` (``image_only``, ``dtype``,
            ``allow_missing_keys``, reader arguments ...).

    Raises:
        ValueError: `finite_keys` names a key not in `keys`.

    Example (bundle config)::

        - _target_: sasnet_components.CheckedLoadImaged
          keys: [image, label]
          allow_missing_keys: true
          image_only: true
          dtype: null
    """

    def __init__(
        self,
        keys: KeysCollection,
        *args: Any,
        case_key: str = "case_id",
        finite_keys: KeysCollection | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, *args, **kwargs)
        self.case_key = case_key
        self.finite_keys = self.keys if finite_keys is None else ensure_tuple(finite_keys)
        unknown = [k for k in self.finite_keys if k not in self.keys]
        if unknown:
            raise InvalidInputError(f"`finite_keys` must be among the keys {self.keys}, got {unknown}.")

    def __call__(self, data: Mapping[Hashable, Any], reader: ImageReader | None = None) -> dict[Hashable, Any]:
        """Load the files of ``data[key]`` for each key, as ``LoadImaged`` does, and check them.

        Args:
            data: a sample, e.g. ``{"case_id": "LA003", "image": path, "label": path}``.
            reader: as for ``LoadImaged.__call__``.

        Returns:
            A copy of `data` with each key's path replaced by its volume (a ``MetaTensor``), and its
            metadata dictionary when ``image_only`` is false.
        """
        # LoadImaged's loop over the keys, with the key in hand when a file fails; everything per call
        # is local, as CacheDataset runs one transform object in several threads
        d = dict(data)
        prefix = f"case {d[self.case_key]!r}: " if self.case_key in d else ""
        try:
            present = list(self.key_iterator(d, self.meta_keys, self.meta_key_postfix))
        except KeyError as e:
            raise UnknownKeyError(f"{prefix}{exception_message(e)}") from e
        for key, meta_key, meta_key_postfix in present:
            path = d[key]
            try:
                loaded = self._loader(path, reader)
            except Exception as e:  # readers raise many types (EOFError, OSError, RuntimeError, ImageFileError ...)
                raise read_error(f"{prefix}cannot read {key} {str(path)!r}", e) from e
            image, meta = (loaded, None) if self._loader.image_only else loaded
            problem = nonfinite_message(image) if key in self.finite_keys else None
            if problem is not None:
                raise InvalidInputError(f"{prefix}{key} {str(path)!r} has {problem}; expected finite intensities.")
            d[key] = image
            if meta is not None:
                meta_key = meta_key or f"{key}_{meta_key_postfix}"
                if meta_key in d and not self.overwriting:
                    raise UnknownKeyError(f"{prefix}metadata key {meta_key!r} already exists and overwriting=False.")
                d[meta_key] = meta
        return d
