"""The GAN program (`--program=gan --arch=dcgan`): recipe, refusals, a run, its numbers, resume."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from engine_helpers import fast_config, read_json, read_lines
from test_resume_kills import _start_and_signal

import engine
from benchmarks import kill_resume
from engine.config import Config, ConfigError
from engine.programs import gan
from engine.programs.gan import doctor as gan_rules
from engine.workflows.setup import configure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A GAN in seconds: quarter-width nets on a fifth of digits (323 training rows).
FAST = dict(program="gan", width=0.25, epochs=2, batch_size=32, test_fraction=0.8)
FLAGS = ("--program=gan", "--width=0.25", "--epochs=2", "--batch_size=32", "--test_fraction=0.8",
         "--checkpoint_every=4", "--parallel=none", "--noprogress")  # fmt: skip


def _config(data_dir, workdir, **overrides):
    return Config(
        data_dir=data_dir, workdir=workdir, progress=False, parallel="none", **{**FAST, **overrides}
    )


def _checked(config: Config) -> Config:
    """The configuration a run checks and trains: the GAN's recipe filled in."""
    return configure(config)[1]


def test_the_recipe_fills_only_settings_left_at_their_defaults():
    config = _checked(Config(program="gan"))
    assert (config.arch, config.lr, config.schedule) == ("dcgan", 2e-4, "constant")
    assert (config.normalize, config.epochs) == ("symmetric", 200)
    mine = _checked(Config(program="gan", lr=1e-4, epochs=7))
    assert (mine.lr, mine.epochs, mine.schedule) == (1e-4, 7, "constant")
    # Given on the command line (run.py's `given`), a value equal to the default wins too.
    given = _checked(Config(program="gan", arch="dcgan", schedule="cosine", given=("schedule",)))
    assert (given.schedule, given.lr) == ("cosine", 2e-4)


@pytest.mark.parametrize(
    "settings,message",
    [
        (
            dict(program="gan", arch="resnet"),
            "--program=gan trains --arch=dcgan, not --arch=resnet",
        ),
        (dict(arch="dcgan"), "--arch=dcgan is trained by --program=gan"),
        (dict(judge="runs/x"), "--judge belongs to the gan program"),
        (dict(program="gan", loss="huber"), "drop --loss"),
        (dict(program="gan", optimizer="sgd"), "uses Adam"),
        (dict(program="gan", normalize="minmax"), "--normalize=symmetric"),
        (dict(program="gan", latent_dim=0), "--latent_dim must be >= 1"),
        (dict(program="gann"), "--program='gann' is not valid"),
    ],
)
def test_settings_the_gan_cannot_honour_are_one_line_errors(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")) as e:
        _checked(Config(**settings))
    assert "\n" not in str(e.value)


def test_a_table_dataset_or_a_bad_image_size_is_refused_before_work(data_dir, tmp_path):
    for settings, message in (
        (dict(dataset="iris"), "needs images"),
        (dict(image_size=22), "--image_size=22 does not suit dcgan"),
    ):
        workdir = str(tmp_path / str(len(message)))
        with pytest.raises(ConfigError, match=message):
            engine.fit(_config(data_dir, workdir, **settings))
        assert not os.path.exists(workdir)  # nothing written


def test_scores_from_their_definitions():
    # Two fakes per row of one real row; a judge sure of one class per fake. Score = exp(H(mean
    # p) - mean H(p)) (Salimans et al. 2016): 2 equally used, certain classes give exactly 2,
    # one class gives 1.
    base = {
        "count": 1.0,
        "samples": 2.0,
        "d_real": 0.5,
        "d_fake": 1.0,
        "batches": 1,
        "real_moments": np.array([[[1.0]], [[1.0]]]),  # one pixel: mean 1, sd 0
        "fake_moments": np.array([[[2.0]], [[2.0]]]),  # two fakes of value 1: mean 1, sd 0
        "confidence": 2.0,
        "entropy": 0.0,
    }
    two = gan.summarize({**base, "class_counts": np.array([1.0, 1.0, 0.0]),
                         "probabilities": np.array([1.0, 1.0, 0.0])})  # fmt: skip
    assert two["score"] == pytest.approx(2.0) and two["classes_over_5pct"] == 2
    assert two["class_shares"] == [0.5, 0.5, 0.0] and two["confidence"] == 1.0
    assert two["moment_gap"] == 0.0 and two["d_fake"] == 0.5
    one = gan.summarize({**base, "class_counts": np.array([2.0, 0.0, 0.0]),
                         "probabilities": np.array([2.0, 0.0, 0.0])})  # fmt: skip
    assert one["score"] == pytest.approx(1.0) and one["min_class_share"] == 0.0


def test_a_gan_run_with_a_judge_writes_samples_numbers_and_a_diagnosis(data_dir, tmp_path):
    judge = str(tmp_path / "judge")
    engine.fit(fast_config(data_dir, judge, epochs=2))
    workdir = str(tmp_path / "gan")
    results = engine.fit(_config(data_dir, workdir, judge=judge))
    test = results["test"]
    # Every evaluated split gets >= 1,000 fakes: ceil(1000 / 36 validation rows) = 28 per row.
    assert test["samples"] == 28 * test["count"] and test["count"] == 1438
    assert sum(test["class_shares"]) == pytest.approx(1.0, abs=1e-3)
    assert 1.0 <= test["score"] <= 10.0 and 0.1 <= test["confidence"] <= 1.0
    assert test["diversity"] > 0 and test["moment_gap"] >= 0
    records = [json.loads(line) for line in read_lines(workdir)]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(r["train"])
        assert r["val"]["samples"] == 28 * 36
    for name in ("samples/epoch_001.png", "samples/epoch_002.png", "samples.png"):
        image = __import__("matplotlib.image").image.imread(os.path.join(workdir, name))
        assert image.shape[:2] == (402, 402)  # 8 x 8 tiles of 16 px x 3, 2 px apart
    assert read_json(workdir, "doctor.json")["context"]["program"] == "gan"
    # Evaluation from the workdir alone (the saved config, the judge's variables in the state).
    again = engine.fit(dataclasses.replace(_config(data_dir, workdir, judge=judge), mode="eval"))
    assert again["test"] == test


def test_a_gan_run_resumes_bit_identically_after_sigterm(data_dir, tmp_path):
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    code, out, err = _start_and_signal(killed, data_dir, [signal.SIGTERM], flags=FLAGS)
    assert code == 143, err
    assert "stopped by SIGTERM after step" in out
    engine.fit(_config(data_dir, killed, checkpoint_every=4))
    engine.fit(_config(data_dir, reference, checkpoint_every=4))
    assert kill_resume.differences(reference, killed) == []


def _records(**train):
    return [{"epoch": e + 1, "train": dict(train), "val": {}} for e in range(5)]


def test_the_doctors_gan_rules_fire_on_their_signs_only():
    assert len(gan_rules.RULES) == 4  # each is fired below, and none on the healthy records
    ctx = {"program": "gan", "epochs": 5, "num_classes": 10}
    healthy = _records(d_loss=0.5, g_loss=2.0, d_fake=0.2)
    for r in healthy:
        r["val"] = {"diversity": 0.9, "classes_over_5pct": 10}
    assert engine.doctor.diagnose(healthy, ctx, gan_rules.RULES) == []
    won = _records(d_loss=0.01, g_loss=6.0, d_fake=0.005)
    assert [f.rule for f in engine.doctor.diagnose(won, ctx, gan_rules.RULES)] == [
        "discriminator_wins"
    ]
    exploding = [{**r, "train": {"d_loss": 0.3, "g_loss": 6.0 + r["epoch"], "d_fake": 0.1}}
                 for r in healthy]  # fmt: skip
    assert [f.rule for f in engine.doctor.diagnose(exploding, ctx, gan_rules.RULES)] == [
        "generator_explodes"
    ]
    collapsed = [{**r, "val": {"diversity": 0.2, "classes_over_5pct": 2}} for r in healthy]
    found = engine.doctor.diagnose(collapsed, ctx, gan_rules.RULES)
    assert [f.rule for f in found] == ["mode_collapse"] and "2 of 10 classes" in found[0].saw
    nan = [{**r, "train": {"d_loss": None, "g_loss": 1.0, "d_fake": 0.1}} for r in healthy]
    assert [f.rule for f in engine.doctor.diagnose(nan, ctx, gan_rules.RULES)] == ["non_finite"]


@pytest.mark.slow  # about 8 minutes here: a LeNet judge (30 epochs) and the 200-epoch recipe
def test_the_default_dcgan_on_digits_draws_every_digit_confidently(tmp_path):
    """The issue's figure: of 1,000+ samples, every class >= 5%, mean confidence >= 0.8."""
    judge, workdir = str(tmp_path / "judge"), str(tmp_path / "gan")

    def run(*flags):
        done = subprocess.run(
            [sys.executable, os.path.join(ROOT, "run.py"), "--noprogress", *flags],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    run("--arch=lenet", f"--workdir={judge}")
    run("--program=gan", f"--judge={judge}", f"--workdir={workdir}")
    test = read_json(workdir, "results.json")["test"]
    assert test["samples"] >= 1000
    assert test["classes_over_5pct"] == 10, test["class_shares"]
    assert test["confidence"] >= 0.8
    assert (
        engine.doctor.diagnose(
            [json.loads(line) for line in read_lines(workdir)],
            read_json(workdir, "doctor.json")["context"],
        )
        == []
    )
