"""Fixtures shared by the test packages."""

from __future__ import annotations

import pytest

from sasnet_components.data import make_synthetic_la
from sasnet_components.data.la import prepare_la


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> str:
    """A prepared tiny LA dataset (read only): 8 synthetic 40x40x24 cases, the first 3 labeled, the last 2
    (SYN006, SYN007) the validation list, 1 test case withheld."""
    root = tmp_path_factory.mktemp("la_tiny")
    raw = make_synthetic_la(str(root / "h5"), num_train=8, num_test=1, shape=(40, 40, 24), seed=0)
    prepare_la(str(raw), str(root / "prepared"), num_labeled=3, num_validation=2)
    return str(root / "prepared")
