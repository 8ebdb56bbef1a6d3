"""The run-dependent defaults: the automatic epoch count and the architectures' recipes."""

import dataclasses
import json

import pytest

import architectures
import run
from engine import defaults, parallel, validation
from engine.build import build
from engine.config import Config, for_workdir


def _resolved(data_dir, **fields) -> Config:
    return validation.validate(Config(data_dir=data_dir, **fields))


def _from_flags(*flags) -> Config:
    run.FLAGS.unparse_flags()
    run.FLAGS(["run.py", *flags])
    try:
        return run._config_from_flags()
    finally:
        run.FLAGS.unparse_flags()


def test_digits_default_stays_30_epochs(data_dir):
    config = _resolved(data_dir)
    assert config.epochs == defaults.AUTO_FLOOR == 30  # 18 updates an epoch: 540 >= 300
    assert "epochs=30" in config.auto


def test_iris_auto_epochs_make_at_least_the_minimum_updates(data_dir):
    config = _resolved(data_dir, dataset="iris")
    updates = defaults.updates_per_epoch(defaults.train_rows(config), config)
    assert updates == 2  # 95 training rows at batch 64
    assert config.epochs * updates >= config.min_updates
    assert config.epochs == 150


def test_auto_epochs_are_floored_and_capped():
    assert defaults.auto_epochs(1000.0, 300) == defaults.AUTO_FLOOR
    assert defaults.auto_epochs(0.1, 300) == defaults.AUTO_CAP


def test_explicit_epochs_win(data_dir):
    assert _resolved(data_dir, dataset="iris", epochs=7).epochs == 7
    # Given on the command line, even at a value the automatic rule could pick.
    flags = ("--dataset=iris", "--epochs=30", f"--data_dir={data_dir}")
    config = validation.validate(_from_flags(*flags))
    assert config.epochs == 30
    assert not any(a.startswith("epochs=") for a in config.auto)


def test_recipe_applies_to_flags_not_given(data_dir):
    config = _resolved(data_dir, arch="vgg")
    recipe = architectures.spec("vgg").recipe
    for name, value in recipe.items():
        assert getattr(config, name) == value
    assert config.optimizer == "momentum" and config.batchnorm == "on"


def test_recipe_never_overrides_a_given_flag(data_dir):
    # --optimizer=adam and --lr=0.001 are the engine's defaults: given, they still win.
    flags = ("--arch=vgg", "--optimizer=adam", "--lr=0.001", f"--data_dir={data_dir}")
    config = validation.validate(_from_flags(*flags))
    assert (config.optimizer, config.lr) == ("adam", 0.001)
    assert config.weight_decay == architectures.spec("vgg").recipe["weight_decay"]
    assert not any(a.startswith(("optimizer=", "lr=")) for a in config.auto)


def test_mlp_has_no_recipe(data_dir):
    config = _resolved(data_dir)
    assert (config.optimizer, config.lr, config.schedule) == ("adam", 1e-3, "cosine")


def test_start_up_lines_name_the_recipe_and_the_epochs(data_dir):
    config = _resolved(data_dir, arch="vgg", width=0.25)
    lines = build(config, parallel.make_plan("none")).notes
    recipe = next(line for line in lines if line.startswith("from the vgg recipe:"))
    assert "optimizer=momentum" in recipe and "lr=0.01" in recipe and "batchnorm=on" in recipe
    iris = defaults.notes(_resolved(data_dir, dataset="iris"))
    assert iris[0].startswith("epochs: 150 (auto: at least 30 epochs and 300 updates at 2 ")
    assert "--epochs to choose" in iris[0]
    given = defaults.notes(_resolved(data_dir, dataset="iris", epochs=7), 2.0)
    assert given == ["epochs: 7 (--epochs) at 2 updates an epoch: 14 updates"]


def test_resolution_is_saved_and_idempotent(data_dir):
    config = _resolved(data_dir, arch="vgg", dataset="digits")
    assert validation.validate(config) == config  # the second validation (engine.fit) agrees
    saved = json.loads(config.to_json())
    # A resumed run with the same flags resolves the same values as the saved ones.
    assert _resolved(data_dir, arch="vgg", dataset="digits").to_dict() == saved
    evaluated = validation.validate(for_workdir(saved, {"mode": "eval"}, source="saved"))
    assert dataclasses.replace(evaluated, mode="train") == config


@pytest.mark.parametrize("field", ["lr", "epochs"])
def test_config_file_values_count_as_given(data_dir, tmp_path, field):
    config = _resolved(data_dir, arch="vgg", dataset="iris")
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    again = validation.validate(_from_flags(f"--config={path}"))
    assert getattr(again, field) == getattr(config, field)


def test_a_search_trial_counts_its_automatic_epochs_again(data_dir):
    base = validation.validate(_from_flags("--dataset=iris", f"--data_dir={data_dir}"))
    assert base.epochs == 150  # 2 updates an epoch at batch 64
    trial = validation.validate(defaults.for_trial(base, batch_size=32, lr=0.01))
    assert trial.epochs == 100  # 3 updates an epoch at batch 32: 300 updates
    assert {"batch_size", "lr"} <= set(trial.given)
    fixed = validation.validate(defaults.for_trial(base, epochs=5))
    assert fixed.epochs == 5


@pytest.mark.parametrize("arch", [n for n in architectures.names() if n != "dcgan"])
def test_every_recipe_names_recipe_fields_with_valid_values(data_dir, arch):
    assert set(defaults.recipe(arch)) <= set(defaults.RECIPE_FIELDS)
    config = _resolved(data_dir, arch=arch)  # the recipe's values pass validation
    assert all(getattr(config, k) == v for k, v in defaults.recipe(arch).items())
