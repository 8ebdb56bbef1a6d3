"""The doctor's rules for a GAN run: the classic ways adversarial training fails.

They read the GAN program's epoch numbers (`train`: `d_loss`, `g_loss`, `d_fake`, the mean
probability D gives the batch's fakes; `val`: `diversity`, and with a judge `classes_over_5pct`
and `confidence`). Sources: Goodfellow et al. (2014), section 3 (a winning discriminator
saturates the generator's gradient), Goodfellow's NIPS 2016 tutorial, section 5.1 (mode
collapse), Radford et al. (2016) (the DCGAN rules), Arjovsky and Bottou (2017) (a perfect
discriminator's vanishing gradients); the LeakyReLU remedy is the seeds' rule (000: "in a GAN
the discriminator should use LeakyReLU, which keeps some gradient information"). Thresholds are
set so that the default DCGAN run on digits stays silent (tests/engine/test_gan.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.doctor.rules import Finding, _get

# D's mean probability on fakes and its loss below which it has won (for `WIN_EPOCHS` epochs).
WIN_FAKE, WIN_LOSS, WIN_EPOCHS = 0.02, 0.05, 3
EXPLODING_G_LOSS = 8.0  # -log D(G(z)) of 8: D gives the fakes ~3e-4
COLLAPSED_DIVERSITY = 0.35  # fakes vary a third as much, pixel by pixel, as real images
COLLAPSE_EPOCHS = 10  # epochs before a lack of variety counts (or all planned, when fewer)


def non_finite(records: Sequence[dict], ctx: dict) -> Finding | None:
    """A loss of either net that is not a number, or skipped non-finite steps."""
    for r in records:
        train = r.get("train") or {}
        bad = [k for k in ("d_loss", "g_loss") if k in train and _get(r, "train", k) is None]
        skipped = train.get("nonfinite_steps", 0)
        if bad or skipped:
            what = f"{' and '.join(bad)} not finite" if bad else f"{skipped} non-finite step(s)"
            return Finding(
                "non_finite",
                r["epoch"],
                what,
                "the adversarial game diverged (a learning rate too high for one of the nets)",
                "lower --lr (DCGAN: 2e-4 with Adam beta1 0.5) and keep the nets' BatchNorm",
            )
    return None


def discriminator_wins(records: Sequence[dict], ctx: dict) -> Finding | None:
    """D calls every fake fake for several epochs: the generator's gradient has vanished."""
    last = records[-WIN_EPOCHS:]
    if len(last) < WIN_EPOCHS:
        return None
    fakes = [_get(r, "train", "d_fake") for r in last]
    losses = [_get(r, "train", "d_loss") for r in last]
    if any(v is None or v >= WIN_FAKE for v in fakes) or any(
        v is None or v >= WIN_LOSS for v in losses
    ):
        return None
    return Finding(
        "discriminator_wins",
        last[-1]["epoch"],
        f"the discriminator's loss is {losses[-1]:.3g} and it gives the fakes a mean "
        f"probability of {fakes[-1]:.3g} of being real, for {WIN_EPOCHS} epochs",
        "the discriminator overpowers the generator, whose gradient through a saturated D "
        "vanishes (Goodfellow et al. 2014; Arjovsky and Bottou 2017)",
        "keep LeakyReLU(0.2) in the discriminator (the seeds: it keeps gradient information), "
        "lower --lr or --width so D learns slower, train longer at a lower rate",
    )


def generator_explodes(records: Sequence[dict], ctx: dict) -> Finding | None:
    """G's loss rose three epochs in a row to a level where D rejects nearly every fake."""
    losses = [_get(r, "train", "g_loss") for r in records[-3:]]
    if len(losses) < 3 or any(v is None for v in losses):
        return None
    rising = losses[0] < losses[1] < losses[2]
    if not (rising and losses[-1] > EXPLODING_G_LOSS):
        return None
    return Finding(
        "generator_explodes",
        records[-1]["epoch"],
        f"the generator's loss rose for 3 epochs to {losses[-1]:.3g} "
        f"(D gives its fakes ~{pow(2.718281828, -losses[-1]):.1e})",
        "the generator falls behind: the discriminator separates real from fake ever better",
        "lower --lr (both nets use it), check the images are in [-1, 1] (--normalize="
        "symmetric, the generator's tanh range) and keep BatchNorm in both nets (DCGAN)",
    )


def mode_collapse(records: Sequence[dict], ctx: dict) -> Finding | None:
    """The fakes are nearly all alike, or (with a judge) cover few of the classes."""
    if len(records) < min(COLLAPSE_EPOCHS, max(int(ctx.get("epochs", 1)), 1)):
        # An untrained generator's samples are alike too: the default run's at epoch 5 (0.48
        # times the real images' spread, 2 classes seen) were varied by epoch 10 (0.90, 9).
        return None
    r = records[-1]
    diversity = _get(r, "val", "diversity")
    classes = _get(r, "val", "classes_over_5pct")
    num_classes = ctx.get("num_classes") or 0
    few = classes is not None and num_classes and classes <= num_classes // 2
    if not (diversity is not None and diversity < COLLAPSED_DIVERSITY) and not few:
        return None
    seen = []
    if diversity is not None:
        seen.append(f"the samples vary {diversity:.2f} times as much as real images pixel by pixel")
    if classes is not None:
        seen.append(f"the judge sees {int(classes)} of {num_classes} classes in 5% or more of them")
    return Finding(
        "mode_collapse",
        r["epoch"],
        "; ".join(seen),
        "mode collapse: the generator maps most noise vectors to a few outputs that fool the "
        "discriminator (Goodfellow's NIPS 2016 tutorial, 5.1)",
        "restart from another --seed, lower --lr, or a larger --batch_size (the discriminator "
        "sees more of the fakes' variety at once)",
    )


RULES = (non_finite, discriminator_wins, generator_explodes, mode_collapse)
