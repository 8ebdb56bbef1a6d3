"""Multilayer perceptron: flatten, then per hidden layer Dense, [BatchNorm], activation, dropout."""

from __future__ import annotations

import flax.linen as nn
import jax

from architectures.layers import Flatten, Net
from architectures.spec import SHARED_OPTIONS, ArchSpec


class MLP(Net):
    """Fully connected net for tables (N, D) or any input, flattened to (N, prod(rest)).

    Attributes:
        hidden_sizes: width of each hidden layer, in order.
    """

    hidden_sizes: tuple[int, ...] = (256, 128)

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, *, mask: jax.Array | None = None
    ) -> jax.Array:
        """(N, ...) -> (N, num_classes) float32 logits, or (N, hidden_sizes[-1]) features."""
        if x.ndim < 2:
            raise ValueError(f"mlp expects a batch (N, D) or (N, ...), got shape {x.shape}")
        x = Flatten(name="flatten")(x).astype(self.dtype)
        for i, size in enumerate(self.hidden_sizes):
            x = self.dense(size, name=f"dense{i}")(x)
            if self.batchnorm:
                x = self.norm(train, name=f"bn{i}")(x, mask=mask)
            x = self.act(x)
            x = self.drop(x, train, name=f"dropout{i}")
        return self.head(x)


SPEC = ArchSpec(
    name="mlp",
    needs_image=False,
    min_image_size=1,
    has_batchnorm=False,
    has_dropout=False,
    default_dropout=0.0,
    options=(*SHARED_OPTIONS, "hidden_sizes"),
    description="multilayer perceptron (hidden_sizes, dropout after each hidden layer)",
    # No recipe: the engine's defaults are the MLP's (Adam, lr 1e-3, cosine; digits 0.9870).
    recipe={},
)
