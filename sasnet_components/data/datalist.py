"""Training and validation lists of the SASNet protocols, built from a prepared datalist JSON."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Union

from sasnet_components.utils.errors import InvalidInputError, MissingInputError, UnknownKeyError, check_option

__all__ = ["ALL_LABELED", "PROTOCOLS", "evaluation_datalist", "semi_supervised_datalists"]

PROTOCOLS = ("default", "paper")
_REQUIRED = ("labeled", "unlabeled", "validation", "test")
ALL_LABELED = "all"  # num_labeled: every case of the training pool with a label, outside the validation list
logger = logging.getLogger(__name__)


def _resolve(item: Dict[str, Any], base: Path, keys) -> Dict[str, Any]:
    out = dict(item)
    for key in keys:
        if key in out:
            out[key] = str(base / out[key])
    return out


def _read_datalist(datalist_file: str) -> Dict[str, List[Dict[str, Any]]]:
    """The four lists of a datalist JSON with paths resolved against its folder."""
    path = Path(datalist_file)
    if not path.is_file():
        raise MissingInputError(
            f"datalist {str(path)!r} does not exist; create it with `python scripts/prepare_la.py --input_dir <LA data> "
            f"--output_dir <dataset_dir>` and pass `--dataset_dir <dataset_dir>`."
        )
    with open(path) as f:
        datalist = json.load(f)
    missing = [k for k in _REQUIRED if k not in datalist]
    if missing:
        raise UnknownKeyError(f"datalist {str(path)!r} lacks {missing}; expected the lists {list(_REQUIRED)}.")
    base = path.parent.resolve()  # absolute paths, whatever the working directory later
    return {k: [_resolve(item, base, ("image", "label")) for item in datalist[k]] for k in _REQUIRED}


def evaluation_datalist(datalist_file: str, name: str = "validation") -> List[Dict[str, Any]]:
    """The labeled cases of one list of a datalist, for evaluation.

    Args:
        datalist_file: path of the datalist JSON (paths relative to it are resolved).
        name: ``"validation"``, ``"test"`` or ``"labeled"``.

    Returns:
        Items ``{"case_id", "image", "label"}`` with absolute paths.

    Raises:
        FileNotFoundError: missing datalist (names ``scripts/prepare_la.py``).
        ValueError: unknown or empty list, or an item without a label.
    """
    name = check_option(name, ("validation", "test", "labeled"), "the evaluation list (`eval_list`)")
    items = _read_datalist(datalist_file)[name]
    if not items:
        raise InvalidInputError(f"the {name!r} list of {datalist_file!r} is empty; nothing to evaluate.")
    unlabeled = [item["case_id"] for item in items if "label" not in item]
    if unlabeled:
        raise InvalidInputError(f"cases {unlabeled[:5]} of the {name!r} list have no label to evaluate against.")
    return items


def _parse_num_labeled(num_labeled: Union[int, str, None]) -> Union[int, str, None]:
    """``None``, ``"all"`` (any case) or an integer (also as a string of digits)."""
    if num_labeled is None or isinstance(num_labeled, bool):
        return None if num_labeled is None else _bad_num_labeled(num_labeled)
    if isinstance(num_labeled, str):
        text = num_labeled.strip().lower()
        if text == ALL_LABELED:
            return ALL_LABELED
        if text.lstrip("-").isdigit():
            return int(text)
        return _bad_num_labeled(num_labeled)
    if isinstance(num_labeled, int) or (hasattr(num_labeled, "is_integer") and num_labeled.is_integer()):
        return int(num_labeled)
    return _bad_num_labeled(num_labeled)


def _bad_num_labeled(value: Any) -> Any:
    raise InvalidInputError(f"`num_labeled` must be an integer >= 1 or 'all', got {value!r}.")


def semi_supervised_datalists(
    datalist_file: str,
    num_labeled: Union[int, str, None] = None,
    protocol: str = "default",
    select_best: bool = False,
    check_files: bool = True,
    unlabeled: bool = True,
    validation_unlabeled: bool = True,
) -> Dict[str, Any]:
    """Build the training pool (labeled + unlabeled) and the validation list of a protocol.

    The datalist (written by ``scripts/prepare_la.py``) holds ``labeled``, ``unlabeled``,
    ``validation`` and ``test`` lists of ``{"case_id", "image", "label"}`` items with paths
    relative to the JSON file. The training pool is ``labeled + unlabeled`` in that order;
    ``num_labeled`` re-splits it: the first ``num_labeled`` cases are labeled, the rest unlabeled
    (the first N of train.list, as in the paper). ``num_labeled="all"`` labels every case of the
    pool that has a label and is not a validation case (the fully supervised upper bound): the LA
    datalist of ``scripts/prepare_la.py`` puts the 8 validation ids at the end of train.list, so
    ``"all"`` is 72 cases on the real LA data under the ``"default"`` protocol (80 under
    ``"paper"``, whose validation list is the test list). Unlabeled items lose their ``label``
    entry, so the training loader never reads those labels.

    A labeled case that is also a validation case is an error under every protocol: validating on
    labels the network was trained on is not an honest measure.

    Protocols:
        - ``"default"`` (honest): validation curves on the ``validation`` monitoring list, whose
          labels only the validation loader reads; their images stay in the unlabeled pool unless
          ``validation_unlabeled`` is false. With ``select_best`` (checkpoint selection on that
          list) its cases leave the unlabeled pool.
        - ``"paper"``: validation on the ``test`` list, as the reference code did when it picked
          its best checkpoint on the test set. For comparison with published numbers only.

    Args:
        datalist_file: path of the datalist JSON.
        num_labeled: number of labeled cases, an integer in [1, pool size] or ``"all"``; ``None``
            keeps the datalist's split.
        protocol: ``"default"`` or ``"paper"``.
        select_best: whether a best-on-validation checkpoint will be kept (``"default"`` only).
        check_files: verify that every referenced file exists.
        unlabeled: keep the unlabeled cases (default); ``False`` (the supervised-only baseline)
            returns no unlabeled item, so nothing unlabeled is checked, cached or loaded.
        validation_unlabeled: keep the validation cases in the unlabeled pool (default: their
            images are used, their labels never read); ``False``: they leave it, so that a model
            evaluated on them has never seen their images (the quick protocol's setting).

    Returns:
        ``{"train": items (labeled first, each with ``"labeled"``), "labeled_indices",
        "unlabeled_indices", "validation": items, "protocol", "num_labeled", "num_unlabeled"}``.

    Raises:
        FileNotFoundError: missing datalist or referenced file (names ``scripts/prepare_la.py``).
        KeyError: a required list is missing from the JSON.
        ValueError: ``num_labeled`` neither ``"all"`` nor an integer in ``[1, pool size]``, beyond
            the cases that have labels, a validation case among the labeled ones, ``"all"`` with no
            labeled case outside the validation list, or the ``"paper"`` protocol without test cases.
    """
    protocol = check_option(protocol, PROTOCOLS, "`protocol`")
    path = Path(datalist_file)
    choice = _parse_num_labeled(num_labeled)
    unlabeled_wanted = bool(unlabeled)
    lists = _read_datalist(datalist_file)
    pool = lists["labeled"] + lists["unlabeled"]

    if protocol == "paper":
        validation = lists["test"]
        if not validation:
            raise InvalidInputError(
                f"protocol 'paper' validates on the test list, but datalist {str(path)!r} has no test cases present."
            )
    else:
        validation = lists["validation"]

    val_ids = {item["case_id"] for item in validation}
    eligible = [i for i, item in enumerate(pool) if "label" in item and item["case_id"] not in val_ids]
    if choice == ALL_LABELED:
        if not eligible:
            raise InvalidInputError(
                f"`num_labeled` 'all': the training pool of {str(path)!r} has no labeled case outside the validation list."
            )
        chosen = eligible
    else:
        n_labeled = len(lists["labeled"]) if choice is None else choice
        if not 1 <= n_labeled <= len(pool):
            raise InvalidInputError(
                f"`num_labeled` must be in [1, {len(pool)}] (the training pool of {str(path)!r}) or 'all', got {n_labeled}."
            )
        without_label = [item["case_id"] for item in pool[:n_labeled] if "label" not in item]
        if without_label:
            raise InvalidInputError(
                f"`num_labeled`={n_labeled} needs labels for cases {without_label[:5]}, which have none in the datalist."
            )
        chosen = list(range(n_labeled))
    labeled = [{**pool[i], "labeled": True} for i in chosen]
    leaked = sorted(val_ids & {item["case_id"] for item in labeled})
    if leaked:
        raise InvalidInputError(
            f"validation cases {leaked[:5]} are among the {len(labeled)} labeled training cases: validating on labels "
            f"the network is trained on is not honest. Use fewer labeled cases or `num_labeled: all` (the "
            f"{len(eligible)} labeled cases outside the validation list)."
        )
    unlabeled = []
    taken = set(chosen)
    for i, item in enumerate(pool):
        if i in taken or not unlabeled_wanted:
            continue
        if (select_best or not validation_unlabeled) and item["case_id"] in val_ids:
            continue  # cases that select the checkpoint or are evaluated leave the unlabeled pool
        unlabeled.append({k: v for k, v in item.items() if k != "label"} | {"labeled": False})

    if check_files:
        for item in labeled + unlabeled + validation:
            for key in ("image", "label"):
                if key in item and not os.path.exists(item[key]):
                    raise MissingInputError(
                        f"case {item['case_id']}: {key} file {item[key]!r} listed in {str(path)!r} does not exist; "
                        "re-run scripts/prepare_la.py."
                    )
    logger.info(
        "protocol %r: %d labeled, %d unlabeled training cases, %d validation cases%s.",
        protocol,
        len(labeled),
        len(unlabeled),
        len(validation),
        " (no unlabeled cases: supervised only)"
        if not unlabeled_wanted
        else " (removed from the unlabeled pool: checkpoint selection on)"
        if select_best
        else " (removed from the unlabeled pool: validation_unlabeled false)"
        if not validation_unlabeled
        else "",
    )
    return {
        "train": labeled + unlabeled,
        "labeled_indices": list(range(len(labeled))),
        "unlabeled_indices": list(range(len(labeled), len(labeled) + len(unlabeled))),
        "validation": validation,
        "protocol": protocol,
        "num_labeled": len(labeled),
        "num_unlabeled": len(unlabeled),
    }
