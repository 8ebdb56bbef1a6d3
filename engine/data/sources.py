"""Dataset sources by name: each kind of source is one registry entry (`register`).

`--dataset=NAME` is resolved here: a `kind:ARGUMENT` name goes to the source registered under
that prefix (`folder:PATH`, `csv:PATH`), a name one source lists goes to it (the embedded
scikit-learn sets), and any other name to the fallback source (the TFDS catalog). The built-in
sources register themselves in their own modules (`embedded`, `folder`, `table`, `catalog`); a
user's source registers the same way from a `--plugins` module:

    from engine.data import sources

    def load_npz(path, options):  # -> engine.data.Dataset
        ...

    sources.register(sources.Source("npz", "npz:PATH: arrays x and y", load_npz, prefix=True))
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from engine.data.source import Dataset

DEFAULT = "digits"  # the default dataset (an embedded set)


@dataclasses.dataclass(frozen=True)
class Options:
    """How a source loads: where prepared data lives and the dataset settings it may use.

    Attributes:
      data_dir: root directory of prepared datasets.
      target: the target column of a table (empty: none given).
      image_size: side length images of variable size are fitted to (None: the source's own).
      skip_bad_files: leave unreadable files out (counted in a warning) instead of stopping.
    """

    data_dir: str
    target: str = ""
    image_size: int | None = None
    skip_bad_files: bool = False


@dataclasses.dataclass(frozen=True)
class Source:
    """One kind of dataset source.

    Attributes:
      name: the source's name; with `prefix`, datasets are named `name:ARGUMENT`.
      help: one line for `--help` (what `--dataset` takes for it).
      load: `(argument, options) -> Dataset`; `argument` is the text after `name:` for a
        prefix source, else the whole dataset name. Errors are one-line `ValueError`s.
      prefix: datasets of this source are named `name:ARGUMENT`.
      names: the dataset names this source holds (the embedded sets), listed in `--help`.
      needs_target: the dataset needs `--target=COLUMN` (a table).
      fallback: it takes every name no other source claims (the TFDS catalog); one source.
    """

    name: str
    help: str
    load: Callable[[str, Options], Dataset]
    prefix: bool = False
    names: tuple[str, ...] = ()
    needs_target: bool = False
    fallback: bool = False


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Registers a kind of dataset source (see the module docstring).

    Raises:
      ValueError: a taken name, or a second fallback source.
    """
    if not source.name.isidentifier() or source.name in _REGISTRY:
        raise ValueError(f"source name {source.name!r} is taken or not an identifier")
    if source.fallback and any(s.fallback for s in _REGISTRY.values()):
        raise ValueError("only one source may take every other name (fallback)")
    _REGISTRY[source.name] = source
    return source


def unregister(name: str) -> None:
    """Removes a source added with `register` (a test's or a notebook's)."""
    _REGISTRY.pop(name, None)


def default_data_dir() -> str:
    """Where prepared datasets live when no directory is given.

    `$TFDS_DATA_DIR`, else TFDS' own default `~/tensorflow_datasets`, so catalog datasets
    prepared by other tools are found there.
    """
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def dataset_names() -> tuple[str, ...]:
    """The dataset names sources list (for --help and error messages).

    >>> dataset_names()
    ('digits', 'breast_cancer', 'diabetes', 'iris', 'wine')
    """
    return tuple(n for s in _REGISTRY.values() for n in s.names)


def describe() -> str:
    """One line per source for `--dataset`'s help, joined with '; ' (the fallback last)."""
    return "; ".join(s.help for s in sorted(_REGISTRY.values(), key=lambda s: s.fallback))


def of(name: str) -> tuple[Source, str]:
    """The source of dataset `name` and the argument it is given.

    Raises:
      ValueError: an empty name, a prefix without its argument, or no source for it.
    """
    if not name:
        raise ValueError(
            f"empty dataset name; give one of {', '.join(dataset_names())}, or a TFDS name"
        )
    kind, colon, argument = name.partition(":")
    source = _REGISTRY.get(kind)
    if colon and source is not None and source.prefix:
        if not argument:
            raise ValueError(f"dataset {name!r} needs a path after the colon, e.g. {kind}:/data/x")
        return source, argument
    for source in _REGISTRY.values():
        if name in source.names:
            return source, name
    fallback = next((s for s in _REGISTRY.values() if s.fallback), None)
    if fallback is None:
        raise ValueError(f"unknown dataset {name!r}; known: {describe()}")
    return fallback, name


def load(name: str, options: Options) -> Dataset:
    """Loads dataset `name`, preparing it into `options.data_dir` the first time.

    Returns:
      The dataset's description and its own splits (test/val None when it has none).
    """
    source, argument = of(name)
    return source.load(argument, options)
