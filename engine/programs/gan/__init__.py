"""The GAN program (`--program=gan`): DCGAN's generator and discriminator on an image dataset.

Its registry entry: the pure program (`program`), what its numbers mean and its sample grid
(`evaluation`), and the doctor's rules for adversarial training (`doctor`).
"""

from architectures import dcgan
from engine.config import at_least, setting
from engine.programs import registry
from engine.programs.gan import doctor
from engine.programs.gan.evaluation import summarize
from engine.programs.gan.program import RECIPE, check, make

SETTINGS = {
    "latent_dim": setting(
        dcgan.LATENT_DIM,
        "size of the generator's noise vector",
        check=at_least(1),
        model=True,
    ),
    "judge": setting(
        "",
        "WORKDIR[:best|latest] of a classifier trained on the same dataset (e.g. --arch=lenet "
        "on digits) that rates the samples each epoch: class shares, confidence, an "
        "Inception-like score",
        model=True,  # the judge's variables are part of the state
        remote=True,
    ),
}

SPEC = registry.register(
    registry.ProgramSpec(
        name="gan",
        help="--arch=dcgan, a generator and a discriminator; flags left at their defaults take "
        "the DCGAN recipe: Adam 2e-4, constant rate, images in [-1, 1], 200 epochs",
        make=make,
        settings=SETTINGS,
        recipe=RECIPE,
        check=check,
        zoo=False,
        nets=dcgan.SPEC,
        archs=("dcgan",),
        doctor_rules=doctor.RULES,
    )
)

__all__ = ["SPEC", "check", "make", "summarize"]
