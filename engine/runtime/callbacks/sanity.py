"""The seeds' first sanity check: a net must be able to overfit a few batches."""

from __future__ import annotations

from engine.runtime.callbacks.base import Callback

ACCURACY = 0.99  # "accuracy >= 99%" on the memorised batches
LOSS = 0.01  # regression: training loss (standardised targets) near zero

HINT = (
    "a net that cannot memorise a few batches has a bug, not too little data: check the "
    "learning rate (try 10x lower and 10x higher --lr), the initialisation (--init) and that "
    "the loss matches the targets (--loss: e.g. cross_entropy on class labels, mse on values)"
)


class OverfitCheck(Callback):
    """Ends the run once the training batches are memorised; otherwise says why it may not be.

    Classification passes at train accuracy >= 99%, regression at train loss <= 0.01 (in
    standardised target units). Passing ends the run as finished (`fit.stop`).
    """

    def __init__(self, batches: int):
        self.batches = batches
        self.reached, self.last, self.fit = 0, None, None

    def on_epoch_end(self, epoch, record, state):
        train = record["train"]
        self.last = train
        passed = train["accuracy"] >= ACCURACY if "accuracy" in train else train["loss"] <= LOSS
        if passed:
            self.reached = epoch
            what = (
                f"train accuracy {train['accuracy']:.4f}"
                if "accuracy" in train
                else f"train loss {train['loss']:.4f}"
            )
            self.fit.stop(
                f"overfit check passed: {what} on {self.batches} batch(es) at epoch {epoch}",
                finished=True,
            )

    def on_fit_end(self, fit, state):
        if self.reached or self.last is None or fit.stop_reason is not None:
            return
        train = self.last
        what = (
            f"train accuracy {train['accuracy']:.4f} < {ACCURACY}"
            if "accuracy" in train
            else f"train loss {train['loss']:.4f} > {LOSS}"
        )
        fit.say(f"overfit check failed: {what} after {fit.epochs} epochs; {HINT}")

    def state_dict(self):
        return {"reached": self.reached}

    def load_state_dict(self, state):
        self.reached = state["reached"]
