"""JSON through the C accelerator ``_json`` directly: ``import json`` pulls in ``re`` and ``enum``
(about 5 ms), a third of the runtime's start-up budget. Same output as ``json`` for our data."""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_scan = _json.make_scanner(_Ctx())


class JSONError(ValueError):
    """The text is not one JSON value."""


def loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode()  # "utf-8-sig" would import a codec module: strip a BOM by hand
    if text[:1] == "\ufeff":
        text = text[1:]
    n = len(text)
    i = 0
    while i < n and text[i] in " \t\r\n":
        i += 1
    try:
        obj, end = _scan(text, i)
    except StopIteration as e:
        raise JSONError(f"expected a JSON value at offset {e.value}") from None
    except Exception:
        import json

        try:
            json.loads(text)
        except ValueError as e:
            raise JSONError(str(e)) from None
        raise JSONError("malformed JSON") from None
    while end < n and text[end] in " \t\r\n":
        end += 1
    if end != n:
        raise JSONError(f"extra data at offset {end}")
    return obj


def _default(o: Any) -> Any:
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _float(f: float) -> str:
    return repr(f)


def dumps(obj: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """Compact (``indent=None``) or indented JSON, ASCII-escaped like json.dumps."""
    if indent is None:
        enc = _json.make_encoder(
            None, _default, _json.encode_basestring_ascii, None, ":", ",", sort_keys, False, True
        )
    else:
        # the C encoder ignores indent; fall back to the pure module for pretty output (rare path)
        import json

        return json.dumps(obj, indent=indent)
    return "".join(enc(obj, 0))
