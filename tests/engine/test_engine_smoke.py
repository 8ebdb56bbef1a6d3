"""Every registered architecture x a classification and a regression loss, end to end.

Each pairing runs the real orchestrating function for a few steps on a tiny image folder: it must
build, train, checkpoint and test without error and with finite numbers.
"""

import math

import pytest
from engine_helpers import fast_config
from folder_fixtures import make_digits_folder

import architectures
from engine.workflows.fit import fit


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """80 grey 8x8 digit PNGs in class folders: 50 train / 6 val / 24 test examples."""
    root = tmp_path_factory.mktemp("tiny") / "digits"
    make_digits_folder(root, colour=False, chinese=False, n_per_class=8)
    return f"folder:{root}"


# Compile time dominates: GoogLeNet's ~4 minutes per case here, the other conv nets' 15-40 s.
# By default the MLP and LeNet run the whole pipeline with both kinds of loss; the larger zoo
# nets are slow here (each of them trains by default in tests/architectures/test_arch_behaviour).
SLOW = {(n, loss) for n in architectures.names() for loss in ("cross_entropy", "huber")} - {
    ("mlp", "cross_entropy"),
    ("mlp", "huber"),
    ("lenet", "cross_entropy"),
    ("lenet", "huber"),
}


def _cases():
    for loss in ("cross_entropy", "huber"):
        for n in architectures.names():
            marks = pytest.mark.slow if (n, loss) in SLOW else ()
            yield pytest.param(n, loss, marks=marks, id=f"{n}-{loss}")


@pytest.mark.parametrize(("arch", "loss"), _cases())
def test_every_architecture_trains_with_each_kind_of_loss(
    arch, loss, tiny_folder, data_dir, tmp_path
):
    spec = architectures.spec(arch)
    options = {"width": 0.25} if "width" in spec.options else {}
    config = fast_config(
        data_dir,
        str(tmp_path / "w"),
        dataset=tiny_folder,
        arch=arch,
        loss=loss,
        epochs=1,
        batch_size=16,
        **options,
    )
    results = fit(config)
    assert results["test"]["count"] == 24
    assert math.isfinite(results["test"]["loss"])
    assert results["train_step_compilations"] == 1
