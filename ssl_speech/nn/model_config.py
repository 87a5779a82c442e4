"""Building an ``SSLModel`` from a stored config without running code the config names.

A checkpoint or an exported model stores its encoder and context as plain configs
(``{"_target_": "ssl_speech.nn.encoders.CPCEncoder", "dim": 256, ...}``). Handing such a config
to Hydra's ``instantiate`` would call whatever it names (``pathlib.Path.unlink``,
``subprocess.run``...), so stored configs are built here instead:

1. :func:`check_model_config` walks the whole ``encoder`` and ``context`` trees *before*
   anything is built. A ``_target_`` must be one of :data:`MODEL_CLASSES` (the library's own
   encoders and context networks); every other value must be plain data (numbers, strings,
   booleans, ``None`` and lists of them). Nested mappings, Hydra's special keys (``_partial_``,
   ``_args_``, ``_recursive_``, ``_convert_``) and keys that are not constructor arguments are
   refused with :class:`UnsafeConfigError`, naming the key and the offending value.
2. :func:`build_model` builds the model on the ``meta`` device first (no memory), refuses more
   than ``max_parameters`` parameters (classes that cannot be built on ``meta``, the log-mel
   encoder, have their integer arguments bounded by :data:`MAX_INTEGER` instead), then builds
   it for real by calling the allowed class with
   keyword arguments: no import, no ``getattr`` on a user string.
3. :func:`check_state_dict` compares the stored tensors with the built model before any is
   copied: same names, same shapes, floating dtypes, and no tensor that claims more elements than
   its storage holds (a stride-0 view declaring 10^12 elements).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ssl_speech.nn import context as _context
from ssl_speech.nn import encoders as _encoders

#: The classes a stored model config may name, by their full dotted path.
MODEL_CLASSES: dict[str, type] = {
    f"{cls.__module__}.{cls.__name__}": cls
    for cls in (
        _encoders.CPCEncoder,
        _encoders.Wav2Vec2ConvEncoder,
        _encoders.LogMelEncoder,
        _context.RecurrentContext,
        _context.LSTMContext,
        _context.GRUContext,
        _context.TransformerContext,
        _context.CausalTransformerContext,
        _context.BidirectionalTransformerContext,
        _context.IdentityContext,
    )
}
MODEL_SECTIONS = ("encoder", "context")
#: Default cap on a stored model's size (about 4 GiB of float32 weights).
MAX_PARAMETERS = 1 << 30
#: Bound on integer arguments of classes that cannot be built on the meta device.
MAX_INTEGER = 1 << 13
_PLAIN = (bool, int, float, str, type(None))


class UnsafeConfigError(ValueError):
    """A stored config names something loading may not build, or is not plain data."""


def _constructor_arguments(cls: type) -> set[str]:
    """Named arguments of ``cls``'s constructor, following ``**kwargs`` up to the base class."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is torch.nn.Module or klass is object:
            break
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
    return names


def _check_plain(value: Any, key: str, source: str) -> None:
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if isinstance(item, Mapping) and "_target_" in item:
                raise UnsafeConfigError(
                    f"{source}: config key {key}[{i}]._target_ names {item['_target_']!r}; a "
                    "stored model config may not nest targets. Loading builds only the "
                    "library's encoders and contexts."
                )
            _check_plain(item, f"{key}[{i}]", source)
        return
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise UnsafeConfigError(
                f"{source}: config key {key}._target_ names {value['_target_']!r}; a stored "
                "model config may not nest targets. Loading builds only the library's encoders "
                "and contexts."
            )
        raise UnsafeConfigError(
            f"{source}: config key {key} is a mapping; stored model configs hold plain values "
            "(numbers, strings, booleans, lists) only"
        )
    raise UnsafeConfigError(
        f"{source}: config key {key} holds a {type(value).__name__}; stored model configs hold "
        "plain values (numbers, strings, booleans, lists) only"
    )


def check_section(section: Any, key: str, source: str,
                  extra_classes: Mapping[str, type] | None = None) -> type:
    """Check one ``encoder`` or ``context`` config; return the class it may build.

    Raises:
        UnsafeConfigError: naming ``source``, the config key and the offending value.
    """
    allowed = {**MODEL_CLASSES, **(extra_classes or {})}
    if not isinstance(section, Mapping):
        raise UnsafeConfigError(
            f"{source}: config key {key} must be a mapping with a _target_, got "
            f"{type(section).__name__}"
        )
    target = section.get("_target_")
    if not isinstance(target, str) or target not in allowed:
        raise UnsafeConfigError(
            f"{source}: config key {key}._target_ names {target!r}, which is not one of the "
            f"model classes loading may build ({', '.join(sorted(allowed))}). Loading never "
            "builds other callables; if you trust this file and it names your own class, pass "
            "it in extra_classes."
        )
    cls = allowed[target]
    accepted = _constructor_arguments(cls)
    for name, value in section.items():
        if name == "_target_":
            continue
        if not isinstance(name, str) or name.startswith("_"):
            raise UnsafeConfigError(
                f"{source}: config key {key}.{name} is not allowed in a stored model config "
                "(Hydra's _partial_, _args_, _recursive_ and _convert_ are refused; keys are "
                f"constructor arguments of {target})"
            )
        if name not in accepted:
            raise UnsafeConfigError(
                f"{source}: config key {key}.{name} is not an argument of {target} (it takes "
                f"{', '.join(sorted(accepted))})"
            )
        _check_plain(value, f"{key}.{name}", source)
    return cls


def check_model_config(config: Any, source: str,
                       extra_classes: Mapping[str, type] | None = None) -> dict[str, type]:
    """Check the ``encoder`` and ``context`` trees of a stored config; nothing is built.

    Returns ``{"encoder": class, "context": class}``.
    """
    if not isinstance(config, Mapping):
        raise UnsafeConfigError(f"{source}: the stored config is not a mapping")
    missing = [key for key in MODEL_SECTIONS if key not in config]
    if missing:
        raise UnsafeConfigError(
            f"{source}: the stored config has no {' or '.join(missing)} entry to build from"
        )
    return {key: check_section(config[key], key, source, extra_classes)
            for key in MODEL_SECTIONS}


def _kwargs(section: Mapping[str, Any]) -> dict[str, Any]:
    return {name: (list(v) if isinstance(v, tuple) else v)
            for name, v in section.items() if name != "_target_"}


def build_model(config: Mapping[str, Any], source: str,
                extra_classes: Mapping[str, type] | None = None,
                max_parameters: int = MAX_PARAMETERS):
    """The ``SSLModel`` a stored config describes (fresh weights), built only after checks.

    Args:
        config: a mapping with ``encoder`` and ``context`` entries.
        source: the file or directory it comes from (for messages).
        extra_classes: further ``{dotted path: class}`` the caller trusts.
        max_parameters: refuse larger models (checked on the ``meta`` device, no memory used).
    """
    from ssl_speech.nn.model import SSLModel

    classes = check_model_config(config, source, extra_classes)

    def make() -> SSLModel:
        parts = {}
        for key in MODEL_SECTIONS:
            try:
                parts[key] = classes[key](**_kwargs(config[key]))
            except (TypeError, ValueError) as err:
                raise UnsafeConfigError(f"{source}: config key {key} cannot be built: {err}") \
                    from err
        try:
            return SSLModel(parts["encoder"], parts["context"])
        except ValueError as err:
            raise UnsafeConfigError(f"{source}: {err}") from err

    try:
        with torch.device("meta"):
            probe = make()
    except (RuntimeError, NotImplementedError):
        # A class that reads tensor values while it is built (torchaudio's mel filterbank)
        # cannot be sized on the meta device: its integer arguments are bounded instead.
        _check_integer_bound(config, source)
        probe = None
    if probe is not None:
        _check_size(sum(p.numel() for p in probe.parameters()), max_parameters, source)
        del probe
    model = make()
    _check_size(sum(p.numel() for p in model.parameters()), max_parameters, source)
    model.config = {key: dict(config[key]) for key in MODEL_SECTIONS}
    return model


def _check_size(count: int, max_parameters: int, source: str) -> None:
    if count > max_parameters:
        raise UnsafeConfigError(
            f"{source}: the stored config describes a model of {count:,} parameters, more "
            f"than the limit of {max_parameters:,}; pass a larger max_parameters if you mean it"
        )


def _check_integer_bound(config: Mapping[str, Any], source: str) -> None:
    for key in MODEL_SECTIONS:
        for name, value in config[key].items():
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_INTEGER:
                raise UnsafeConfigError(
                    f"{source}: config key {key}.{name} = {value} is larger than {MAX_INTEGER}, "
                    "the bound on sizes of models that cannot be measured before they are built"
                )


def _storage_holds(tensor: Tensor) -> bool:
    """``True`` when the elements ``tensor`` declares fit inside its storage, without repeats."""
    if tensor.numel() == 0:
        return True
    if any(stride == 0 and size > 1 for size, stride in zip(tensor.shape, tensor.stride())):
        return False
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape,
                                                                   tensor.stride()))
    needed = (tensor.storage_offset() + span) * tensor.element_size()
    return needed <= tensor.untyped_storage().nbytes() and tensor.numel() <= span


def check_state_dict(model: torch.nn.Module, state: Any, source: str) -> None:
    """Refuse stored weights that do not fit ``model`` exactly; nothing is copied.

    Raises:
        UnsafeConfigError: listing missing and unexpected names, the first shape mismatches,
            non-tensors, non-float tensors and tensors larger than their storage.
    """
    if not isinstance(state, Mapping):
        raise UnsafeConfigError(f"{source}: the stored weights are not a mapping of tensors")
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(map(str, unexpected[:5]))}"
                        + (" ..." if len(unexpected) > 5 else ""))
    for name in sorted(set(expected) & set(state)):
        value, want = state[name], expected[name]
        if not isinstance(value, Tensor):
            problems.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif not _storage_holds(value):
            problems.append(f"{name} declares {tuple(value.shape)} = {value.numel():,} elements, "
                            "more than its stored data holds")
        elif tuple(value.shape) != tuple(want.shape):
            problems.append(f"{name} has shape {tuple(value.shape)}, the model built from the "
                            f"config needs {tuple(want.shape)}")
        elif value.dtype.is_floating_point != want.dtype.is_floating_point or value.is_complex():
            problems.append(f"{name} has dtype {value.dtype}, the model needs {want.dtype}")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6
                                           else "")
        raise UnsafeConfigError(f"{source}: the stored weights do not match the model its "
                                f"config describes: {shown}")
