"""Docker's ``--format``: the subset of Go's text/template that docker and podman users write.

Supported: ``{{.Field.Sub}}``, ``{{.}}``, ``$`` and ``$var`` (``{{$x := .A}}``), ``{{range .L}}``
(with ``$i, $v :=`` and ``{{else}}``), ``{{if}}/{{else if}}/{{else}}/{{end}}``, ``{{with}}``,
pipes (``{{.X | json}}``), parenthesised calls, ``{{- trim -}}`` markers, ``{{/* comments */}}``,
Go's builtins (and or not len index slice print printf println eq ne lt le gt ge) and docker's
(json split join title lower upper pad truncate). A ``table`` prefix renders a padded table with
headers, as docker's tabwriter does; the literal escapes ``\\t`` and ``\\n`` mean tab and newline.

Values follow Go's printing: a missing map key prints ``<no value>``, lists ``[a b]``, maps
``map[k:v]``, structs ``{v1 v2}``. Plain dicts are structs (an unknown field is an error, exit
125); wrap real maps (labels, annotations) in :class:`GoMap` so absent keys are not errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from pallet.errors import UsageError


class TemplateError(UsageError):
    """A --format template that does not parse or cannot run on the data."""


class GoMap(dict):
    """A Go map: absent keys are the zero value (``<no value>``), printing is ``map[k:v]`` sorted."""


class _Nil:
    """A typed nil (nil slice or nil map): JSON ``null``, prints ``[]`` / ``map[]``, empty and false."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text

    def __bool__(self) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self):
        return iter(())


NIL_SLICE = _Nil("[]")
NIL_MAP = _Nil("map[]")


class _Missing:
    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


# -- lexing and parsing ---------------------------------------------------------------------------------
class _Tok:
    __slots__ = ("kind", "pos", "value")

    def __init__(self, kind: str, value: Any, pos: int) -> None:
        # kind: field var ident string number bool nil pipe lparen rparen declare assign comma dot
        self.kind, self.value, self.pos = kind, value, pos


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][-+]?\d+)?))
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""",
    re.VERBOSE,
)


def _lex_action(text: str, offset: int) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m or m.end() == i:
            raise TemplateError(f"template: unexpected {text[i]!r} at column {offset + i + 1} in action")
        kind = m.lastgroup or ""
        val = m.group()
        i = m.end()
        if kind == "ws":
            continue
        if kind == "string":
            try:
                toks.append(_Tok("string", json.loads(val), offset))
            except ValueError:
                import ast

                toks.append(_Tok("string", ast.literal_eval(val), offset))
        elif kind == "raw":
            toks.append(_Tok("string", val[1:-1], offset))
        elif kind == "char":
            import ast

            toks.append(_Tok("number", ord(ast.literal_eval(val)), offset))
        elif kind == "number":
            v = val.replace("_", "")
            num: Any = int(v, 0) if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", v) else float(v)
            toks.append(_Tok("number", num, offset))
        elif kind == "ident" and val in ("true", "false"):
            toks.append(_Tok("bool", val == "true", offset))
        elif kind == "ident" and val == "nil":
            toks.append(_Tok("nil", None, offset))
        elif kind == "field":
            toks.append(_Tok("field", val[1:].split("."), offset))
        elif kind == "var":
            name, _, rest = val.partition(".")
            toks.append(_Tok("var", (name, rest.split(".") if rest else []), offset))
        else:
            toks.append(_Tok(kind, val, offset))
    return toks


# nodes (plain slotted classes: cheap to define, so --format costs little at start-up)
class _Text:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Arg:
    __slots__ = ("chain", "kind", "value")

    def __init__(self, kind: str, value: Any, chain: list[str] | None = None) -> None:
        self.kind = kind  # field var const ident pipe dot nil
        self.value = value
        self.chain = chain if chain is not None else []


class _Cmd:
    __slots__ = ("args",)

    def __init__(self, args: list[_Arg]) -> None:
        self.args = args


class _Pipe:
    __slots__ = ("assign", "cmds", "decl")

    def __init__(self, cmds: list[_Cmd], decl: list[str] | None = None, assign: bool = False) -> None:
        self.cmds = cmds
        self.decl = decl if decl is not None else []
        self.assign = assign  # "=" rather than ":="


class _Action:
    __slots__ = ("pipe",)

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe


class _Branch:
    __slots__ = ("body", "kind", "orelse", "pipe")

    def __init__(self, kind: str, pipe: _Pipe, body: list[Any], orelse: list[Any]) -> None:
        self.kind, self.pipe, self.body, self.orelse = kind, pipe, body, orelse  # if range with


class _Control:
    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind  # break continue


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.items = self._split(src)
        self.i = 0

    @staticmethod
    def _split(src: str) -> list[tuple[str, Any, int]]:
        """Text and action items, with trim markers applied."""
        items: list[tuple[str, Any, int]] = []
        pos = 0
        while True:
            start = src.find("{{", pos)
            if start < 0:
                items.append(("text", src[pos:], pos))
                break
            text = src[pos:start]
            inner_start = start + 2
            if (
                src.startswith("-", inner_start)
                and inner_start + 1 < len(src)
                and src[inner_start + 1] in " \t\r\n"
            ):
                text = text.rstrip(" \t\r\n")
                inner_start += 1
            items.append(("text", text, pos))
            comment_at = inner_start + (
                1 if inner_start > start + 2 and src[inner_start : inner_start + 1].isspace() else 0
            )
            if src.startswith("/*", comment_at):
                end_c = src.find("*/", inner_start)
                if end_c < 0:
                    raise TemplateError("template: unclosed comment")
                end = src.find("}}", end_c)
                if end < 0:
                    raise TemplateError("template: unclosed action")
                trim_right = src[end - 1] == "-" and src[end - 2] in " \t\r\n"
                pos = end + 2
                if trim_right:
                    while pos < len(src) and src[pos] in " \t\r\n":
                        pos += 1
                continue
            end = _find_close(src, inner_start)
            inner = src[inner_start:end]
            trim_right = inner.endswith("-") and len(inner) >= 2 and inner[-2] in " \t\r\n"
            if trim_right:
                inner = inner[:-1]
            items.append(("action", inner, inner_start))
            pos = end + 2
            if trim_right:
                while pos < len(src) and src[pos] in " \t\r\n":
                    pos += 1
        return items

    def parse(self) -> list[Any]:
        body, end = self._list(top=True)
        if end is not None:
            raise TemplateError(f"template: unexpected {{{{{end}}}}}")
        return body

    def _list(self, top: bool = False) -> tuple[list[Any], str | None]:
        out: list[Any] = []
        while self.i < len(self.items):
            kind, value, pos = self.items[self.i]
            self.i += 1
            if kind == "text":
                if value:
                    out.append(_Text(value))
                continue
            toks = _lex_action(value, pos)
            if not toks:
                raise TemplateError(f"template: missing value for command at column {pos}")
            head = toks[0]
            if head.kind == "ident" and head.value in ("end", "else"):
                if top:
                    raise TemplateError(f"template: unexpected {{{{{head.value}}}}}")
                if head.value == "else":
                    self._else_toks = toks[1:]
                return out, head.value
            if head.kind == "ident" and head.value in ("if", "range", "with"):
                out.append(self._branch(head.value, toks[1:]))
                continue
            if head.kind == "ident" and head.value in ("break", "continue"):
                out.append(_Control(head.value))
                continue
            if head.kind == "ident" and head.value in ("define", "template", "block"):
                raise TemplateError(f"template: {{{{{head.value}}}}} is not supported in --format")
            out.append(_Action(self._pipe(toks, allow_decl=True)))
        if not top:
            raise TemplateError("template: unexpected EOF (missing {{end}})")
        return out, None

    def _branch(self, kind: str, toks: list[_Tok]) -> _Branch:
        if not toks:
            raise TemplateError(f"template: missing value for {kind}")
        pipe = self._pipe(toks, allow_decl=True, range_decl=kind == "range")
        body, end = self._list()
        orelse: list[Any] = []
        if end == "else":
            rest = getattr(self, "_else_toks", [])
            self._else_toks = []
            if rest and rest[0].kind == "ident" and rest[0].value in ("if", "with"):
                orelse = [self._branch(rest[0].value, rest[1:])]  # "else if" shares the outer {{end}}
                return _Branch(kind, pipe, body, orelse)
            orelse, end = self._list()
            if end != "end":
                raise TemplateError(f"template: expected {{{{end}}}} after {{{{else}}}} in {kind}")
        return _Branch(kind, pipe, body, orelse)

    def _pipe(self, toks: list[_Tok], allow_decl: bool = False, range_decl: bool = False) -> _Pipe:
        decl: list[str] = []
        assign = False
        # $x := ... | $i, $v := ...
        if allow_decl and toks and toks[0].kind == "var" and not toks[0].value[1]:
            j = 0
            names = [toks[0].value[0]]
            if len(toks) > 2 and toks[1].kind == "comma" and toks[2].kind == "var":
                if not range_decl:
                    raise TemplateError("template: too many declarations")
                names.append(toks[2].value[0])
                j = 2
            if len(toks) > j + 1 and toks[j + 1].kind in ("declare", "assign"):
                decl, assign = names, toks[j + 1].kind == "assign"
                toks = toks[j + 2 :]
        cmds: list[_Cmd] = []
        cur: list[_Arg] = []
        k = 0
        while k < len(toks):
            t = toks[k]
            if t.kind == "pipe":
                if not cur:
                    raise TemplateError("template: missing command before |")
                cmds.append(_Cmd(cur))
                cur = []
                k += 1
                continue
            arg, k = self._operand(toks, k)
            cur.append(arg)
        if not cur:
            raise TemplateError("template: missing command")
        cmds.append(_Cmd(cur))
        return _Pipe(cmds, decl, assign)

    def _operand(self, toks: list[_Tok], k: int) -> tuple[_Arg, int]:
        t = toks[k]
        k += 1
        if t.kind == "field":
            return _Arg("field", None, t.value), k
        if t.kind == "var":
            return _Arg("var", t.value[0], t.value[1]), k
        if t.kind == "dot":
            return _Arg("dot", None), k
        if t.kind in ("string", "number", "bool"):
            return _Arg("const", t.value), k
        if t.kind == "nil":
            return _Arg("nil", None), k
        if t.kind == "ident":
            if t.value not in FUNCS:
                raise TemplateError(f'template: function "{t.value}" not defined')
            return _Arg("ident", t.value), k
        if t.kind == "lparen":
            depth, j = 1, k
            while j < len(toks) and depth:
                if toks[j].kind == "lparen":
                    depth += 1
                elif toks[j].kind == "rparen":
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError("template: unclosed left paren")
            inner = self._pipe(toks[k : j - 1])
            chain: list[str] = []
            if j < len(toks) and toks[j].kind == "field" and toks[j].pos == toks[j - 1].pos:
                chain = toks[j].value
                j += 1
            return _Arg("pipe", inner, chain), j
        raise TemplateError(f"template: unexpected {t.value!r} in operand")


def _find_close(src: str, start: int) -> int:
    """Index of the ``}}`` closing an action, skipping quoted strings."""
    i = start
    while i < len(src):
        c = src[i]
        if c in "\"`'":
            j = i + 1
            while j < len(src) and src[j] != c:
                j += 2 if c != "`" and src[j] == "\\" else 1
            i = j + 1
            continue
        if src.startswith("}}", i):
            return i
        i += 1
    raise TemplateError("template: unclosed action (missing }})")


# -- values ---------------------------------------------------------------------------------------------
def _go_float(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0"
    from decimal import Decimal

    sign, digits, exp = Decimal(repr(f)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    point = len(ds) + int(exp)  # position of the decimal point
    e = point - 1
    s = "-" if sign else ""
    if e < -4 or e >= 6:  # fmt's %v: shortest digits, exponent form from 1e+06
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{s}{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}"
    if point <= 0:
        return f"{s}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{s}{ds}{'0' * (point - len(ds))}"
    return f"{s}{ds[:point]}.{ds[point:]}"


def go_str(v: Any, nested: bool = False) -> str:
    """Go's ``%v``."""
    if v is MISSING:
        return "<nil>" if nested else "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, _Nil):
        return repr(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, GoMap):
        return "map[" + " ".join(f"{go_str(k, True)}:{go_str(v[k], True)}" for k in sorted(v)) + "]"
    if isinstance(v, dict):
        return "{" + " ".join(go_str(x, True) for x in v.values()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x, True) for x in v) + "]"
    return str(v)


def _plain(v: Any) -> Any:
    """JSON-ready: typed nils → None, Go maps sorted by key, integral floats as Go writes them."""
    if isinstance(v, (_Nil, _Missing)):
        return None
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    if isinstance(v, GoMap):
        return {str(k): _plain(v[k]) for k in sorted(v)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def to_json(v: Any, indent: int | None = None) -> str:
    """Go's json encoding without HTML escaping (docker's ``json`` function)."""
    if indent is None:
        return json.dumps(_plain(v), ensure_ascii=False, separators=(",", ":"), default=str)
    return json.dumps(_plain(v), ensure_ascii=False, indent=indent, default=str)


def truth(v: Any) -> bool:
    if v is None or v is MISSING:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict, _Nil)):
        return bool(v)
    return True


# -- functions ------------------------------------------------------------------------------------------
def _len(x: Any) -> int:
    if isinstance(x, (str, list, tuple, dict, _Nil)):
        return len(x)
    raise TemplateError(f"len of {go_str(x)}: unsupported type")


def _index(x: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(x, dict):
            x = x.get(k, MISSING)
        elif isinstance(x, (list, tuple, str)):
            if not isinstance(k, int) or not 0 <= k < len(x):
                raise TemplateError(f"index out of range: {k}")
            x = x[k]
        elif isinstance(x, _Nil) or x is None or x is MISSING:
            return MISSING
        else:
            raise TemplateError(f"can't index item of type {type(x).__name__}")
    return x


def _slice(x: Any, *idx: int) -> Any:
    if not isinstance(x, (str, list, tuple)):
        raise TemplateError("can't slice item")
    if len(idx) == 0:
        return x
    if len(idx) == 1:
        return x[idx[0] :]
    return x[idx[0] : idx[1]]


def _sprint(*args: Any) -> str:
    out = []
    for i, a in enumerate(args):
        if i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_str(a))
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def _sprintf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def conv(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        try:
            a = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb in ("v", "s"):
            text = go_str(a) if not isinstance(a, str) else a
            if prec is not None:
                text = text[: int(prec)]
        elif verb == "q":
            text = json.dumps(go_str(a) if not isinstance(a, str) else a, ensure_ascii=False)
        elif verb == "d":
            text = (
                str(int(a))
                if isinstance(a, (int, float)) and not isinstance(a, bool)
                else f"%!d({go_str(a)})"
            )
        elif verb == "t":
            text = go_str(bool(a)) if isinstance(a, bool) else f"%!t({go_str(a)})"
        elif verb in ("f", "F", "e", "g"):
            p = 6 if prec is None else int(prec)
            text = format(float(a), f".{p}{verb.lower()}") if verb != "g" else _go_float(float(a))
        elif verb in ("x", "X"):
            text = (
                format(a, verb)
                if isinstance(a, int)
                else (a.encode().hex() if isinstance(a, str) else go_str(a))
            )
            if verb == "X":
                text = text.upper()
        else:
            text = f"%!{verb}({go_str(a)})"
        if width and width != "*":
            w = int(width)
            if "-" in flags:
                text = text.ljust(w)
            elif "0" in flags and verb in "dfFeg":
                text = text.rjust(w, "0")
            else:
                text = text.rjust(w)
        return text

    return _VERB.sub(conv, fmt)


def _cmp(op: str) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        a = "" if a is MISSING else a
        if op == "eq":
            if not bs:
                raise TemplateError("missing argument for comparison")
            return any(a == b for b in bs)
        if len(bs) != 1:
            raise TemplateError(f"{op} takes two arguments")
        b = bs[0]
        try:
            return {"ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
        except TypeError:
            raise TemplateError(f"incompatible types for comparison: {go_str(a)} and {go_str(b)}") from None

    return f


def _join(items: Any, sep: str) -> str:
    if isinstance(items, (_Nil, _Missing)) or items is None:
        return ""
    if not isinstance(items, (list, tuple)):
        raise TemplateError(f"join of {go_str(items)}: expected a list")
    return sep.join(go_str(x) for x in items)


def _pad(s: Any, before: int, after: int) -> str:
    text = go_str(s)
    if not text:
        return text
    return " " * before + text + " " * after


def _truncate(s: Any, n: int) -> str:
    text = go_str(s)
    return text[:n]


def _title(s: Any) -> str:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), go_str(s))


FUNCS: dict[str, Callable[..., Any]] = {
    "and": lambda *a: next((x for x in a if not truth(x)), a[-1] if a else None),
    "or": lambda *a: next((x for x in a if truth(x)), a[-1] if a else None),
    "not": lambda a: not truth(a),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _sprint,
    "printf": _sprintf,
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "eq": _cmp("eq"),
    "ne": _cmp("ne"),
    "lt": _cmp("lt"),
    "le": _cmp("le"),
    "gt": _cmp("gt"),
    "ge": _cmp("ge"),
    "html": lambda s: (
        go_str(s)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("'", "&#39;")
    ),
    "js": lambda s: json.dumps(go_str(s))[1:-1],
    "urlquery": lambda s: __import__("urllib.parse").parse.quote_plus(go_str(s)),
    # docker's additions
    "json": lambda v: to_json(v),
    "split": lambda s, sep: go_str(s).split(sep),
    "join": _join,
    "title": _title,
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "pad": _pad,
    "truncate": _truncate,
}


# -- execution ------------------------------------------------------------------------------------------
class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Template:
    """A parsed template; ``execute(data)`` gives the text."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._tree = _Parser(source).parse()

    def execute(self, data: Any) -> str:
        out: list[str] = []
        self._run(self._tree, data, [{"$": data}], out)
        return "".join(out)

    # scopes: a stack of dicts of variables
    def _run(self, nodes: list[Any], dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, _Text):
                out.append(n.text)
            elif isinstance(n, _Action):
                v = self._pipe(n.pipe, dot, scopes)
                if not n.pipe.decl:
                    out.append(go_str(v))
            elif isinstance(n, _Branch):
                self._branch(n, dot, scopes, out)
            elif isinstance(n, _Control):
                raise _Break() if n.kind == "break" else _Continue()

    def _branch(self, n: _Branch, dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
        scopes = [*scopes, {}]
        if n.kind == "range":
            decl = n.pipe.decl
            val = self._pipe(_Pipe(n.pipe.cmds), dot, scopes)
            if isinstance(val, dict):
                items = [(k, val[k]) for k in (sorted(val) if isinstance(val, GoMap) else val)]
            elif isinstance(val, (list, tuple, str)):
                items = list(enumerate(val))
            elif isinstance(val, int) and not isinstance(val, bool):
                items = [(i, i) for i in range(val)]
            elif val is None or val is MISSING or isinstance(val, _Nil):
                items = []
            else:
                raise TemplateError(f"range can't iterate over {go_str(val)}")
            if not items:
                self._run(n.orelse, dot, scopes, out)
                return
            for k, v in items:
                if len(decl) == 1:
                    scopes[-1][decl[0]] = v
                elif len(decl) == 2:
                    scopes[-1][decl[0]], scopes[-1][decl[1]] = k, v
                try:
                    self._run(n.body, v, scopes, out)
                except _Continue:
                    continue
                except _Break:
                    break
            return
        val = self._pipe(n.pipe, dot, scopes)
        if truth(val):
            self._run(n.body, val if n.kind == "with" else dot, scopes, out)
        else:
            self._run(n.orelse, dot, scopes, out)

    def _pipe(self, p: _Pipe, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        val: Any = _NOARG
        for cmd in p.cmds:
            val = self._cmd(cmd, dot, scopes, val)
        if p.decl:
            if p.assign:
                for s in reversed(scopes):
                    if p.decl[0] in s:
                        s[p.decl[0]] = val
                        break
                else:
                    raise TemplateError(f"undefined variable: {p.decl[0]}")
            else:
                scopes[-1][p.decl[0]] = val
        return val

    def _cmd(self, cmd: _Cmd, dot: Any, scopes: list[dict[str, Any]], final: Any) -> Any:
        head = cmd.args[0]
        if head.kind == "ident":
            args = [self._arg(a, dot, scopes) for a in cmd.args[1:]]
            if final is not _NOARG:
                args.append(final)
            try:
                return FUNCS[head.value](*args)
            except TemplateError:
                raise
            except TypeError:
                raise TemplateError(f"template: wrong number of arguments for {head.value}") from None
            except (ValueError, KeyError, IndexError) as e:
                raise TemplateError(f"template: error calling {head.value}: {e}") from None
        if len(cmd.args) > 1 or final is not _NOARG:
            fn = self._arg(head, dot, scopes) if head.kind in ("field", "var") else None
            if callable(fn):  # a method with arguments, as docker's {{.Label "com.example.key"}}
                args = [self._arg(a, dot, scopes) for a in cmd.args[1:]]
                if final is not _NOARG:
                    args.append(final)
                try:
                    return fn(*args)
                except TypeError:
                    raise TemplateError(
                        f"template: wrong number of arguments for {self._describe(head)}"
                    ) from None
            raise TemplateError(f"template: can't give argument to non-function {self._describe(head)}")
        return self._arg(head, dot, scopes)

    def _arg(self, a: _Arg, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if a.kind == "const":
            return a.value
        if a.kind == "nil":
            return None
        if a.kind == "dot":
            return dot
        if a.kind == "field":
            return self._chain(dot, a.chain, a)
        if a.kind == "var":
            for s in reversed(scopes):
                if a.value in s:
                    return self._chain(s[a.value], a.chain, a)
            raise TemplateError(f"template: undefined variable {a.value!r}")
        if a.kind == "pipe":
            return self._chain(self._pipe(a.value, dot, scopes), a.chain, a)
        if a.kind == "ident":
            return FUNCS[a.value]()
        raise TemplateError("template: bad operand")

    def _chain(self, v: Any, chain: list[str], a: _Arg) -> Any:
        for i, name in enumerate(chain):
            where = "." + ".".join(chain[: i + 1])
            if isinstance(v, (GoMap, _Nil)):
                v = v.get(name, MISSING) if isinstance(v, GoMap) else MISSING
            elif isinstance(v, dict):
                if name not in v:
                    raise TemplateError(f"template: executing at <{where}>: can't evaluate field {name}")
                v = v[name]
            elif v is None or v is MISSING:
                raise TemplateError(f"template: executing at <{where}>: nil pointer evaluating {name}")
            elif hasattr(v, name) and not name.startswith("_"):
                v = getattr(v, name)
            else:
                raise TemplateError(
                    f"template: executing at <{where}>: can't evaluate field {name} in type {_type_name(v)}"
                )
        return v

    @staticmethod
    def _describe(a: _Arg) -> str:
        if a.kind == "field":
            return "." + ".".join(a.chain)
        return str(a.value)


def _type_name(v: Any) -> str:
    return {str: "string", int: "int", float: "float64", bool: "bool", list: "[]interface {}"}.get(
        type(v), type(v).__name__
    )


class _NoArg:
    pass


_NOARG = _NoArg()


# -- docker's --format conventions ------------------------------------------------------------------------
def unescape(fmt: str) -> str:
    """docker treats the two-character sequences ``\\t`` and ``\\n`` in --format as tab and newline."""
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def is_table(fmt: str) -> bool:
    return fmt.strip().startswith("table")


def header_for(field_name: str, headers: Mapping[str, str]) -> str:
    if field_name in headers:
        return headers[field_name]
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|$)|[A-Z]?[a-z0-9]+|[A-Z]+", field_name)
    return " ".join(w.upper() for w in words) or field_name.upper()


def render(fmt: str, rows: list[Any], headers: Mapping[str, str] | None = None) -> str:
    """Rows through a --format template (each followed by a newline), or a padded table for ``table``."""
    fmt = unescape(fmt)
    if is_table(fmt):
        body = fmt.strip()[len("table") :].lstrip(" ")
        return render_table(body, rows, headers or {})
    tmpl = Template(fmt)
    return "".join(tmpl.execute(r) + "\n" for r in rows)


def render_table(body: str, rows: list[Any], headers: Mapping[str, str]) -> str:
    tmpl = Template(body)
    lines = [_header_line(body, headers)]
    lines += [tmpl.execute(r) for r in rows]
    return tabwrite("\n".join(lines) + "\n")


def _header_line(body: str, headers: Mapping[str, str]) -> str:
    """Each ``{{...}}`` action of the row template becomes its column's title."""

    def title(m: re.Match[str]) -> str:
        fields = re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", m.group(1))
        return header_for(fields[0], headers) if fields else ""

    return re.sub(r"\{\{-?(.*?)-?\}\}", title, body)


def tabwrite(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter with docker's settings (minwidth 10, padding 3, spaces, left aligned)."""
    raw_lines = text.split("\n")
    trailing_newline = raw_lines and raw_lines[-1] == ""
    if trailing_newline:
        raw_lines = raw_lines[:-1]
    lines = [ln.split("\t") for ln in raw_lines]
    out: list[str] = []
    widths: list[int] = []

    def write(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            cells = lines[i]
            parts = []
            for j, c in enumerate(cells):
                if j < len(widths):
                    parts.append(c.ljust(widths[j]))
                else:
                    parts.append(c)
            out.append("".join(parts).rstrip(" "))

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write(line0, line1)

    fmt(0, len(lines))
    return "\n".join(out) + ("\n" if trailing_newline else "")
