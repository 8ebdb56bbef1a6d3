"""The registry: names, specs, option validation with one-line errors, family defaults."""

import jax
import pytest

import architectures
from architectures.spec import SHARED_OPTIONS

# A valid value for every option a family may accept (to prove each listed option is usable).
EXAMPLES = {
    "dropout": 0.1,
    "activation": "gelu",
    "leaky_slope": 0.1,
    "init": "he",
    "batchnorm": True,
    "dtype": "bfloat16",
    "bn_axis_name": "batch",
    "hidden_sizes": (8,),
    "width": 0.25,
    "aux_heads": False,
    "zero_init_residual": False,
    "stem": "cifar",
}


def test_names():
    assert architectures.names() == ("mlp", "lenet", "alexnet", "vgg", "nin", "googlenet", "resnet")


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unknown_architecture_lists_valid_names():
    message = one_line_error(architectures.get, "resnet18x", num_classes=10)
    assert "resnet18x" in message and all(n in message for n in architectures.names())
    assert "mlp" in one_line_error(architectures.spec, "nope")


def test_unknown_option_lists_valid_options():
    message = one_line_error(architectures.get, "lenet", num_classes=10, depth=18)
    assert "'depth'" in message and all(o in message for o in SHARED_OPTIONS)


@pytest.mark.parametrize(
    ("name", "option", "value", "says"),
    [
        ("mlp", "dropout", 1.0, "[0, 1)"),
        ("mlp", "dropout", -0.1, "[0, 1)"),
        ("mlp", "activation", "swish", "relu, leaky_relu, gelu, tanh, sigmoid"),
        ("mlp", "init", "kaiming", "lecun, he, xavier, normal"),
        ("mlp", "hidden_sizes", (0, 4), "positive ints"),
        ("mlp", "hidden_sizes", "64", "positive ints"),
        ("mlp", "batchnorm", "yes", "True or False"),
        ("mlp", "dtype", "int32", "floating"),
        ("mlp", "dtype", "float99", "floating"),
        ("mlp", "bn_axis_name", 3, "string or None"),
        ("vgg", "depth", 18, "11, 13, 16, 19"),
        ("resnet", "depth", 20, "18, 34, 50, 101, 152"),
        ("resnet", "width", 0, "positive"),
        ("resnet", "stem", "tiny", "auto, imagenet, cifar"),
        ("googlenet", "aux_heads", 1, "True or False"),
    ],
)
def test_bad_option_values_fail_in_one_line(name, option, value, says):
    message = one_line_error(architectures.get, name, num_classes=10, **{option: value})
    assert says in message and name in message


@pytest.mark.parametrize("classes", [0, -1, 2.5, True, "10"])
def test_bad_num_classes(classes):
    assert "num_classes" in one_line_error(architectures.get, "mlp", num_classes=classes)


def test_none_means_family_default():
    model = architectures.get("vgg", num_classes=10, dropout=None, batchnorm=None, depth=None)
    assert (model.dropout, model.batchnorm, model.depth) == (0.5, False, 16)
    model = architectures.get("resnet", num_classes=10)
    assert (model.dropout, model.batchnorm, model.depth) == (0.0, True, 18)
    assert architectures.get("mlp", num_classes=2, init="xavier").initializer == "xavier"


@pytest.mark.parametrize("name", architectures.names())
def test_spec_matches_the_built_model(name):
    spec = architectures.spec(name)
    assert spec.name == name and spec.description
    assert set(SHARED_OPTIONS) <= set(spec.options)
    assert spec.has_dropout == (spec.default_dropout > 0)
    size = max(spec.min_image_size, 8)
    shape = (1, size, size, 1) if spec.needs_image else (1, 5)
    small = {"width": 0.25} if "width" in spec.options else {}
    model = architectures.get(name, num_classes=3, **small)
    assert model.batchnorm == spec.has_batchnorm and model.dropout == spec.default_dropout
    collections = set(architectures.variable_shapes(model, shape))
    assert collections == ({"params", "batch_stats"} if spec.has_batchnorm else {"params"})
    if spec.depths:
        assert spec.default_depth in spec.depths and model.depth == spec.default_depth


@pytest.mark.parametrize("name", architectures.names())
def test_every_listed_option_builds(name):
    spec = architectures.spec(name)
    options = {k: v for k, v in EXAMPLES.items() if k in spec.options and k != "bn_axis_name"}
    if spec.depths:
        options["depth"] = min(spec.depths)
    model = architectures.get(name, num_classes=3, **options)
    size = max(spec.min_image_size, 8)
    shape = (2, size, size, 3) if spec.needs_image else (2, 5)
    variables = architectures.variable_shapes(model, shape)
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False), variables, jax.ShapeDtypeStruct(shape, "f4")
    )
    assert out.shape == (2, 3) and out.dtype == "float32"
    # bn_axis_name is accepted too (it only matters inside pmap / a named vmap axis).
    assert architectures.get(name, num_classes=3, bn_axis_name="batch").bn_axis_name == "batch"
