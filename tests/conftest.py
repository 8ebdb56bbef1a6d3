"""Test-session settings shared by every test: one private prepared-dataset directory."""

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One prepared-datasets directory per test process (the embedded sets are built once)."""
    return str(tmp_path_factory.mktemp("tfds"))
