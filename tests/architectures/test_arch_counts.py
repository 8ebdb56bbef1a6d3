"""Parameter counts at paper geometry, counted with jax.eval_shape (nothing large is allocated).

Expected values are the published ones: issue 4's list, which are torchvision's documented
`num_params` for alexnet, vgg*, googlenet (aux_logits=False) and resnet*, and the classic LeNet-5
count (LeCun et al. 1998 with full C3 connections). A mismatch is a bug in the model.
"""

import dataclasses

import jax
import pytest

import architectures

IMAGENET = (1, 224, 224, 3)

# (name, options, input shape, classes, published count, source)
PUBLISHED = [
    ("lenet", {}, (1, 32, 32, 1), 10, 61_706, "LeNet-5, issue 4"),
    ("alexnet", {}, IMAGENET, 1000, 61_100_840, "torchvision alexnet"),
    ("vgg", {"depth": 11}, IMAGENET, 1000, 132_863_336, "torchvision vgg11"),
    ("vgg", {"depth": 13}, IMAGENET, 1000, 133_047_848, "torchvision vgg13"),
    ("vgg", {"depth": 16}, IMAGENET, 1000, 138_357_544, "torchvision vgg16"),
    ("vgg", {"depth": 19}, IMAGENET, 1000, 143_667_240, "torchvision vgg19"),
    ("vgg", {"depth": 11, "batchnorm": True}, IMAGENET, 1000, 132_868_840, "torchvision vgg11_bn"),
    ("vgg", {"depth": 16, "batchnorm": True}, IMAGENET, 1000, 138_365_992, "torchvision vgg16_bn"),
    ("googlenet", {"aux_heads": False}, IMAGENET, 1000, 6_624_904, "torchvision googlenet"),
    ("resnet", {"depth": 18}, IMAGENET, 1000, 11_689_512, "torchvision resnet18"),
    ("resnet", {"depth": 34}, IMAGENET, 1000, 21_797_672, "torchvision resnet34"),
    ("resnet", {"depth": 50}, IMAGENET, 1000, 25_557_032, "torchvision resnet50"),
    ("resnet", {"depth": 101}, IMAGENET, 1000, 44_549_160, "torchvision resnet101"),
    ("resnet", {"depth": 152}, IMAGENET, 1000, 60_192_808, "torchvision resnet152"),
]


def _id(case):
    name, options = case[0], case[1]
    return name + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("case", PUBLISHED, ids=_id)
def test_published_parameter_count(case):
    name, options, shape, classes, expected, _source = case
    model = architectures.get(name, num_classes=classes, **options)
    assert architectures.count_params(model, shape) == expected


def test_registry_paper_counts_are_the_published_ones():
    # The README table reads spec(name).paper_params: it must list every count above, and any
    # other entry it has is counted here.
    published = {(n, tuple(sorted(o.items())), count) for n, o, _, _, count, _ in PUBLISHED}
    listed = set()
    for name in architectures.names():
        for paper in architectures.spec(name).paper_params:
            key = (name, tuple(sorted(paper.options)), paper.params)
            listed.add(key)
            if key not in published:
                model = architectures.get(
                    name, num_classes=paper.num_classes, **dict(paper.options)
                )
                assert architectures.count_params(model, paper.input_shape) == paper.params
    assert published <= listed


def test_nin_count_matches_the_per_layer_formula():
    # No published count: sum k*k*c_in*c_out + c_out over d2l's NiN layout, block by block.
    blocks = [(11, 3, 96), (5, 96, 256), (3, 256, 384), (3, 384, 1000)]  # (k, c_in, c_out)
    expected = sum(k * k * cin * cout + cout + 2 * (cout * cout + cout) for k, cin, cout in blocks)
    model = architectures.get("nin", num_classes=1000)
    assert architectures.count_params(model, IMAGENET) == expected == 7_439_608


def test_googlenet_aux_heads_add_exactly_their_layers():
    # Each aux head: 1x1 conv to 128 (no bias) + BatchNorm(128), FC 128*4*4 -> 1024, FC -> classes.
    def aux(c_in):
        return c_in * 128 + 2 * 128 + (2048 * 1024 + 1024) + (1024 * 1000 + 1000)

    with_aux = architectures.count_params(
        architectures.get("googlenet", num_classes=1000, aux_heads=True), IMAGENET
    )
    assert with_aux == 6_624_904 + aux(512) + aux(528)  # after 4a (512 ch) and 4d (528 ch)
    assert with_aux == 13_004_888  # torchvision googlenet with aux_logits=True


def test_counts_exclude_batchnorm_statistics():
    model = architectures.get("resnet", num_classes=1000, depth=18)
    shapes = architectures.variable_shapes(model, IMAGENET)
    # BatchNorm channels of ResNet-18: stem 64; per stage 4 BN + 1 projection BN (stages 2-4).
    channels = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512
    stats = sum(v.size for v in jax.tree.leaves(shapes["batch_stats"]))
    assert stats == 2 * channels  # running mean and variance, not counted as parameters
    assert architectures.count_params(model, IMAGENET) == 11_689_512


def test_first_conv_adapts_to_the_channel_count():
    # LeNet on RGB: only conv1's kernel grows, by 5*5*6 weights per extra channel.
    model = architectures.get("lenet", num_classes=10)
    grey = architectures.count_params(model, (1, 32, 32, 1))
    assert architectures.count_params(model, (1, 32, 32, 3)) == grey + 2 * 5 * 5 * 6


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        architectures.spec("vgg").min_image_size = 1
