"""``@dataclass`` that is cheap to define: for modules on ``pallet run``'s start-up path.

The standard ``@dataclass`` writes the source of ``__init__``, ``__repr__``, ``__eq__`` ... and
``exec()``s it for every class (0.5-1 ms each), and importing :mod:`dataclasses` costs ~8 ms
(it imports inspect, ast, dis ...). ``pallet run`` defines ~25 record classes on its way (engine,
store, storage, reference, context): that was ~25 ms of a command measured against podman.
This :func:`dataclass` builds the same methods from closures (~0.05 ms per class) and imports
:mod:`dataclasses` only if something introspects a class: ``__dataclass_fields__`` is made on
first access, so ``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` still work.

Supported, with the standard semantics: ``@dataclass`` and ``@dataclass(init=, repr=, eq=,
frozen=, unsafe_hash=)``; defaults; ``field(default=, default_factory=, init=, repr=, hash=,
compare=, metadata=)``; ``ClassVar`` annotations; ``__post_init__``; inheriting fields from
another record. Not supported (TypeError): ``order``, ``slots``, ``kw_only``, ``InitVar``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["asdict", "dataclass", "field", "fields", "replace"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Field:
    """What :func:`field` returns and a record keeps per field (converted to a
    :class:`dataclasses.Field` when :mod:`dataclasses` asks)."""

    __slots__ = ("compare", "default", "default_factory", "hash", "init", "metadata", "name", "repr", "type")

    def __init__(self, default: Any, default_factory: Any, init: bool, repr: bool, hash: bool | None,
                 compare: bool, metadata: Any) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.default, self.default_factory = default, default_factory
        self.init, self.repr, self.hash, self.compare, self.metadata = init, repr, hash, compare, metadata
        self.name = ""
        self.type: Any = None


def field(*, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True, repr: bool = True,
          hash: bool | None = None, compare: bool = True, metadata: Any = None) -> Any:
    """As :func:`dataclasses.field`."""
    return _Field(default, default_factory, init, repr, hash, compare, metadata)


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__qualname__", "")
    text = str(text)
    return text.startswith(("ClassVar", "typing.ClassVar", "t.ClassVar")) or text == "ClassVar"


class _LazyFields:
    """``__dataclass_fields__`` made on first access (importing :mod:`dataclasses` only then)."""

    def __get__(self, obj: Any, owner: type) -> dict[str, Any]:
        import dataclasses as dc

        out: dict[str, Any] = {}
        for name, f in owner.__record_fields__.items():
            default = f.default if f.default is not MISSING else dc.MISSING
            factory = f.default_factory if f.default_factory is not MISSING else dc.MISSING
            df = dc.field(default=default, default_factory=factory, init=f.init, repr=f.repr, hash=f.hash,
                          compare=f.compare, metadata=f.metadata)
            df.name, df.type = name, f.type
            df._field_type = dc._FIELD  # type: ignore[attr-defined]
            df.kw_only = False
            out[name] = df
        type.__setattr__(owner, "__dataclass_fields__", out)
        return out


def _frozen_error(name: str) -> Exception:
    from dataclasses import FrozenInstanceError

    return FrozenInstanceError(f"cannot assign to field {name!r}")


def dataclass(cls: type | None = None, /, *, init: bool = True, repr: bool = True, eq: bool = True,
              order: bool = False, unsafe_hash: bool = False, frozen: bool = False,
              **unsupported: Any) -> Any:
    """As :func:`dataclasses.dataclass`, for the subset this module's docstring lists."""
    if order or unsupported:
        what = ["order"] if order else list(unsupported)
        raise TypeError(f"pallet.records.dataclass does not support {what}")

    def wrap(c: type) -> type:
        return _process(c, init, repr, eq, frozen, unsafe_hash)

    return wrap if cls is None else wrap(cls)


def _process(cls: type, init: bool, repr_: bool, eq: bool, frozen: bool, unsafe_hash: bool) -> type:
    specs: dict[str, _Field] = {}
    for base in reversed(cls.__mro__[1:]):
        inherited = base.__dict__.get("__record_fields__")
        if inherited:
            specs.update(inherited)
        elif "__dataclass_fields__" in base.__dict__:
            raise TypeError(f"{cls.__qualname__}: a record cannot inherit from the dataclass "
                            f"{base.__qualname__}")
    # the class's own annotations (inspect.get_annotations would import inspect: what we avoid)
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, _Field) else _Field(value, MISSING, True, True, None, True, None)
        if isinstance(spec.default, (list, dict, set)):
            raise ValueError(f"mutable default {type(spec.default)} for field {name} is not allowed: "
                             "use default_factory")
        spec.name, spec.type = name, annotation
        if spec.default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, spec.default)
        specs[name] = spec
    inits = [s for s in specs.values() if s.init]
    seen_default = False
    for s in inits:
        has_default = s.default is not MISSING or s.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {s.name!r} follows default argument")
        seen_default = seen_default or has_default
    type.__setattr__(cls, "__record_fields__", specs)
    type.__setattr__(cls, "__record_frozen__", frozen)
    type.__setattr__(cls, "__dataclass_fields__", _LazyFields())
    type.__setattr__(cls, "__match_args__", tuple(s.name for s in inits))
    if init:
        type.__setattr__(cls, "__init__", _make_init(cls, inits, [s for s in specs.values() if not s.init],
                                                     frozen))
    if repr_ and "__repr__" not in cls.__dict__:
        shown = tuple(s.name for s in specs.values() if s.repr)

        def __repr__(self: Any) -> str:
            parts = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
            return f"{self.__class__.__qualname__}({parts})"

        type.__setattr__(cls, "__repr__", __repr__)
    compared = tuple(s.name for s in specs.values() if s.compare)
    class_hash = cls.__dict__.get("__hash__", MISSING)
    explicit_hash = not (class_hash is MISSING or (class_hash is None and "__eq__" in cls.__dict__))
    if eq and "__eq__" not in cls.__dict__:

        def __eq__(self: Any, other: Any) -> Any:
            if other.__class__ is self.__class__:  # tuples, as dataclasses (identity first)
                return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)
            return NotImplemented

        type.__setattr__(cls, "__eq__", __eq__)
    hashed = tuple(s.name for s in specs.values() if (s.compare if s.hash is None else s.hash))
    if unsafe_hash or (eq and frozen and not explicit_hash):

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in hashed))

        type.__setattr__(cls, "__hash__", __hash__)
    elif eq and not frozen and not explicit_hash:
        type.__setattr__(cls, "__hash__", None)
    if frozen:
        names = frozenset(specs)

        def __setattr__(self: Any, name: str, value: Any) -> None:
            if type(self) is cls or name in names:
                raise _frozen_error(name)
            super(cls, self).__setattr__(name, value)  # type: ignore[misc]

        def __delattr__(self: Any, name: str) -> None:
            if type(self) is cls or name in names:
                raise _frozen_error(name)
            super(cls, self).__delattr__(name)  # type: ignore[misc]

        type.__setattr__(cls, "__setattr__", __setattr__)
        type.__setattr__(cls, "__delattr__", __delattr__)
    return cls


def _make_init(cls: type, inits: list[_Field], others: list[_Field], frozen: bool) -> Callable[..., None]:
    qual = cls.__qualname__
    post_init = hasattr(cls, "__post_init__")
    count = len(inits)
    put = object.__setattr__ if frozen else setattr

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > count:
            raise TypeError(f"{qual}.__init__() takes {count + 1} positional arguments but "
                            f"{len(args) + 1} were given")
        for i, s in enumerate(inits):
            name = s.name
            if i < len(args):
                if name in kwargs:
                    raise TypeError(f"{qual}.__init__() got multiple values for argument {name!r}")
                value = args[i]
            elif name in kwargs:
                value = kwargs.pop(name)
            elif s.default is not MISSING:
                value = s.default
            elif s.default_factory is not MISSING:
                value = s.default_factory()
            else:
                raise TypeError(f"{qual}.__init__() missing 1 required positional argument: {name!r}")
            put(self, name, value)
        if kwargs:
            raise TypeError(f"{qual}.__init__() got an unexpected keyword argument {next(iter(kwargs))!r}")
        for s in others:
            if s.default_factory is not MISSING:
                put(self, s.name, s.default_factory())
            elif s.default is not MISSING:
                put(self, s.name, s.default)
        if post_init:
            self.__post_init__()

    __init__.__qualname__ = f"{qual}.__init__"
    return __init__


def fields(obj: Any) -> tuple[Any, ...]:
    """The record's (or dataclass's) fields, as :func:`dataclasses.fields`."""
    import dataclasses

    return dataclasses.fields(obj)


def replace(obj: Any, /, **changes: Any) -> Any:
    """A copy of ``obj`` with ``changes`` (as :func:`dataclasses.replace`; no dataclasses import)."""
    specs = getattr(type(obj), "__record_fields__", None)
    if specs is None:
        import dataclasses

        return dataclasses.replace(obj, **changes)
    for name in changes:
        s = specs.get(name)
        if s is not None and not s.init:
            raise ValueError(f"field {name} is declared with init=False, it cannot be given to replace()")
    for name, s in specs.items():
        if s.init and name not in changes:
            changes[name] = getattr(obj, name)
    return obj.__class__(**changes)


def asdict(obj: Any) -> Any:
    """As :func:`dataclasses.asdict` (records, dataclasses, lists, tuples and dicts of them, deep
    copies); records need no dataclasses import."""
    specs = getattr(type(obj), "__record_fields__", None)
    if specs is not None:
        return {name: asdict(getattr(obj, name)) for name in specs}
    if hasattr(type(obj), "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    if isinstance(obj, list):
        return [asdict(v) for v in obj]
    if isinstance(obj, tuple):
        items = [asdict(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, dict):
        return {asdict(k): asdict(v) for k, v in obj.items()}
    if isinstance(obj, (str, int, float, bool, bytes, type(None))):
        return obj
    import copy

    return copy.deepcopy(obj)
