"""The summary's shapes and receptive fields against the formulas users compute by hand.

Independent references computed here: out = floor((in + 2p - k) / s) + 1 (ceil for ceil-mode
pools), and the receptive field by the backward recurrence RF(i) = (RF(i+1) - 1) * s + k over the
main path (the summary uses the forward form; they must agree). Known values: VGG-16's pool5 sees
212 pixels, AlexNet's pool5 195, ResNet-18's last block 435 (widely tabulated, e.g. Araujo et al.,
"Computing receptive fields of convolutional neural networks", Distill 2019).
"""

import math

import pytest

import architectures


def rows_by_path(name, shape, **options):
    model = architectures.get(name, **options)
    return {row.path: row for row in architectures.layers(model, shape)}


def out_size(size, k, s, p, ceil=False):
    return (math.ceil if ceil else math.floor)((size + 2 * p - k) / s) + 1


def receptive_field(layers):
    """Backward recurrence over (k, s) from the last layer down to the input."""
    rf = 1
    for k, s in reversed(layers):
        rf = (rf - 1) * s + k
    return rf


def test_lenet_rows():
    rows = rows_by_path("lenet", (1, 32, 32, 1), num_classes=10)
    path = [("conv1", 5, 1, 0), ("pool1", 2, 2, 0), ("conv2", 5, 1, 0), ("pool2", 2, 2, 0)]
    size, channels = 32, {"conv1": 6, "pool1": 6, "conv2": 16, "pool2": 16}
    for i, (layer, k, s, p) in enumerate(path):
        size = out_size(size, k, s, p)
        assert rows[(layer,)].output_shape == (1, size, size, channels[layer])
        assert rows[(layer,)].receptive_field == receptive_field(
            [(k, s) for _, k, s, _ in path[: i + 1]]
        )
    assert rows[("pool2",)].receptive_field == 16
    assert rows[("flatten",)].receptive_field == "global"
    assert rows[("conv1",)].params == 6 * 5 * 5 * 1 + 6
    assert rows[("fc1",)].params == 16 * 5 * 5 * 120 + 120


def test_alexnet_rows_at_224():
    rows = rows_by_path("alexnet", (1, 224, 224, 3), num_classes=1000)
    path = [
        ("conv1", 11, 4, 2), ("pool1", 3, 2, 0), ("conv2", 5, 1, 2), ("pool2", 3, 2, 0),
        ("conv3", 3, 1, 1), ("conv4", 3, 1, 1), ("conv5", 3, 1, 1), ("pool5", 3, 2, 0),
    ]  # fmt: skip
    size = 224
    for i, (layer, k, s, p) in enumerate(path):
        size = out_size(size, k, s, p)
        assert rows[(layer,)].output_shape[1:3] == (size, size), layer
        assert rows[(layer,)].receptive_field == receptive_field(
            [(k, s) for _, k, s, _ in path[: i + 1]]
        )
    assert size == 6 and rows[("pool5",)].receptive_field == 195
    assert rows[("avgpool",)].output_shape == (1, 6, 6, 256)


def test_vgg16_pool5_sees_212_pixels():
    rows = rows_by_path("vgg", (1, 224, 224, 3), num_classes=1000, depth=16)
    layers = []
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        layers += [(3, 1)] * convs + [(2, 2)]
        pool = rows[(f"pool{block}",)]
        assert pool.receptive_field == receptive_field(layers)
        assert pool.output_shape[1] == 224 // 2**block
    assert rows[("pool5",)].receptive_field == 212
    assert rows[("pool5",)].jump == 32


def test_resnet18_main_path_and_projection_branch():
    rows = rows_by_path("resnet", (1, 224, 224, 3), num_classes=1000, depth=18)
    layers = [(7, 2), (3, 2)]  # stem conv, stem max-pool
    assert rows[("stem_pool",)].receptive_field == receptive_field(layers)
    for stage in range(1, 5):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            before = receptive_field(layers)
            layers += [(3, stride), (3, 1)]
            row = rows[(f"layer{stage}_{block}",)]
            assert row.receptive_field == receptive_field(layers)
            assert row.output_shape == (
                1,
                56 // 2 ** (stage - 1),
                56 // 2 ** (stage - 1),
                64 * 2 ** (stage - 1),
            )
            if stride == 2:  # the 1x1 projection sees the block input's field only
                assert rows[(f"layer{stage}_{block}", "proj")].receptive_field == before
    assert rows[("layer4_1",)].receptive_field == 435
    assert rows[("gap",)].receptive_field == "global"


def test_googlenet_shapes_follow_the_paper_table():
    # Szegedy et al. 2015, Table 1 (output sizes at 224): ceil-mode pools as torchvision.
    rows = rows_by_path("googlenet", (1, 224, 224, 3), num_classes=1000)
    size = out_size(224, 7, 2, 3)
    assert rows[("conv1",)].output_shape == (1, size, size, 64) == (1, 112, 112, 64)
    expected = {"pool1": 56, "pool2": 28, "pool3": 14, "pool4": 7}
    # Between the pools, convs and Inception blocks keep the size ("same" padding).
    for pool, kernel in (("pool1", 3), ("pool2", 3), ("pool3", 3), ("pool4", 2)):
        size = out_size(size, kernel, 2, 0, ceil=True)
        assert rows[(pool,)].output_shape[1] == size == expected[pool]
    channels = {"3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528, "4e": 832,
                "5a": 832, "5b": 1024}  # fmt: skip
    for block, c in channels.items():
        assert rows[(f"inception{block}",)].output_shape[-1] == c
    # Main path through a block is b3 (1x1 -> 3x3): the block adds (3 - 1) * jump.
    before = rows[("pool2",)]
    assert rows[("inception3a",)].receptive_field == before.receptive_field + 2 * before.jump
    assert rows[("inception3a", "b1")].receptive_field == before.receptive_field  # 1x1 side branch


def test_summary_text_has_rows_and_totals():
    model = architectures.get("resnet", num_classes=1000, depth=18)
    text = architectures.summary(model, (1, 224, 224, 3))
    assert "trainable params: 11,689,512" in text
    assert "non-trainable (batch_stats): 9,600" in text  # mean + var of 4,800 BN channels
    line = next(t for t in text.splitlines() if t.startswith("layer4_1"))
    assert "(1, 7, 7, 512)" in line and line.split()[-1] == "435"


def test_summary_lists_training_only_aux_heads():
    model = architectures.get("googlenet", num_classes=10, width=0.25)
    rows = architectures.layers(model, (1, 32, 32, 3))
    aux = {row.path[0]: row for row in rows if row.detail == "(train only)"}
    assert sorted(aux) == ["aux1_head", "aux2_head"]
    assert sum(row.params for row in rows if len(row.path) == 1) == architectures.count_params(
        model, (1, 32, 32, 3)
    )


@pytest.mark.parametrize("name", architectures.names())
def test_every_architecture_summarises(name):
    size = max(architectures.spec(name).min_image_size, 8)
    options = {"width": 0.25} if "width" in architectures.spec(name).options else {}
    model = architectures.get(name, num_classes=10, **options)
    text = architectures.summary(model, (1, size, size, 1))
    total = architectures.count_params(model, (1, size, size, 1))
    assert f"trainable params: {total:,}" in text
    assert text.splitlines()[3].split()[0]  # at least one layer row after the header


def test_param_order_is_call_order_not_sorted():
    """The doctor reads layers input side first; a pytree would sort "stem" after "layer4_1"."""
    from architectures.summary import param_order

    resnet = architectures.get("resnet", num_classes=10)
    order = param_order(resnet, (1, 32, 32, 3))
    # resnet.py's call order: the stem, layers 1-4 of two blocks each (ResNet-18), the head.
    blocks = tuple(f"layer{i}_{j}" for i in range(1, 5) for j in range(2))
    assert order == ("stem", *blocks, "head")
    assert list(order) != sorted(order)


def test_the_summary_and_the_state_share_one_trace_of_init():
    """A start counts parameters, then builds the state: the model's Python runs once."""
    import flax.linen as nn
    import jax
    import numpy as np
    import optax

    from engine.programs import state as state_lib

    calls = []

    class Counted(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            calls.append(x.shape)  # runs only while JAX traces the module
            return nn.Dense(3)(x)

    model = Counted()
    assert architectures.count_params(model, (1, 4)) == 15  # 4 * 3 weights + 3 biases
    created = state_lib.create(
        model,
        optax.sgd(0.1),
        rng=jax.random.PRNGKey(0),
        sample_input=np.zeros((1, 4), np.float32),
        norm={"input_shift": np.zeros(4), "input_scale": np.ones(4)},
    )
    assert created.params["Dense_0"]["kernel"].shape == (4, 3)
    # Before the shared jitted init, eval_shape and the state's jit traced it once each.
    assert calls == [(1, 4)]
