"""--init_from / --init_params / --freeze: start from another run's parameters, keep some fixed."""

import dataclasses
import os

import numpy as np
from engine_helpers import fast_config, read_state

import engine
from engine.data import classes
from engine.workflows import finetune
from engine.workflows.setup import prepare


def test_merge_loads_matching_paths_and_reports_the_rest():
    fresh = {"dense0": {"kernel": np.zeros((4, 3))}, "head": {"kernel": np.zeros((3, 5))}}
    source = {"dense0": {"kernel": np.ones((4, 3))}, "head": {"kernel": np.ones((3, 10))}}
    tree, loaded, kept = finetune.merge(fresh, source)
    assert loaded == ["dense0/kernel"]
    assert kept == ["head/kernel (shape (3, 5), source (3, 10))"]
    np.testing.assert_array_equal(tree["dense0"]["kernel"], np.ones((4, 3)))
    np.testing.assert_array_equal(tree["head"]["kernel"], np.zeros((3, 5)))
    _, loaded, kept = finetune.merge(fresh, source, "^head")
    assert loaded == [] and kept[0] == "dense0/kernel (not selected by --init_params)"


def test_a_fresh_head_on_loaded_parameters_starts_at_zero():
    # Big Transfer's rule (Kolesnikov et al. 2020, s3.3): the new head's logits start at 0.
    params = {"dense0": {"kernel": np.ones((4, 3))}, "head": {"kernel": np.ones((3, 5))}}
    tree, zeroed = finetune.zero_fresh_head(params, ["dense0/kernel"])  # the head not loaded
    assert zeroed == ["head/kernel"]
    np.testing.assert_array_equal(tree["head"]["kernel"], np.zeros((3, 5)))
    np.testing.assert_array_equal(tree["dense0"]["kernel"], np.ones((4, 3)))  # hidden: kept
    _, zeroed = finetune.zero_fresh_head(params, ["dense0/kernel", "head/kernel"])  # loaded
    assert zeroed == []


def test_init_from_with_a_frozen_layer(data_dir, tmp_path, capsys, caplog):
    source, target = str(tmp_path / "source"), str(tmp_path / "target")
    config = fast_config(data_dir, source, epochs=1)
    engine.fit(config)
    capsys.readouterr()
    engine.fit(
        dataclasses.replace(
            config,
            workdir=target,
            init_from=f"{source}:latest",
            init_params="^dense0/",
            freeze="^dense0/",
        )
    )
    out = capsys.readouterr().out
    # orbax's Checkpointer on an item folder warned that the step's metadata file was missing
    assert "Metadata file does not exist" not in caplog.text
    assert "loaded 2 parameter tensors; re-initialised: head/bias (not selected" in out
    assert "zero-initialised: head/bias, head/kernel" in out
    assert "frozen (2): dense0/bias, dense0/kernel" in out
    before = read_state(os.path.join(source, "checkpoints", "latest", "1", "state"))["params"]
    after = read_state(os.path.join(target, "checkpoints", "latest", "1", "state"))["params"]
    for name in ("kernel", "bias"):  # loaded, then never updated: bit-identical
        np.testing.assert_array_equal(after["dense0"][name], before["dense0"][name])
    assert not np.array_equal(after["head"]["kernel"], before["head"]["kernel"])


def test_classes_keeps_and_renumbers_labels():
    from engine.data.source import ArraySource, DatasetInfo, Splits

    labels = np.array([0, 5, 7, 5, 9, 1], np.int32)
    source = ArraySource(np.arange(6, dtype=np.float32)[:, None], labels)
    info = DatasetInfo("toy", "classification", (1,), num_classes=10)
    kept = classes.filter_classes(Splits(info, source, source, source), (5, 7, 9))
    assert kept.info.num_classes == 3 and kept.info.class_names == ("5", "7", "9")
    inputs, targets = kept.train.get(np.arange(len(kept.train)))
    assert inputs[:, 0].tolist() == [1, 2, 3, 4]  # the rows labelled 5, 7, 5, 9
    assert targets.tolist() == [0, 1, 0, 2] == kept.train.targets.tolist()


def test_classes_of_an_in_memory_dataset_stay_in_memory(data_dir, tmp_path):
    # Relabeled rows of arrays are arrays: streaming them spawned grain workers every epoch
    # (a 3-epoch LeNet run on 81 digits rows took 35 s instead of 11).
    config = fast_config(data_dir, str(tmp_path), classes=(5, 6, 7, 8, 9))
    run = prepare(config).run
    assert isinstance(run.splits.train, classes.Relabeled)
    assert not run.train_loader.streaming and not run.val_loader.streaming
