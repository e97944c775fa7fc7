"""YAML configuration files read exactly like the Go side (go.yaml.in/yaml/v3 plus config/yaml.go).

PyYAML composes the node tree (raw scalar text, style, explicit tag, line); the implicit tag of a plain
scalar is then resolved with yaml.v3's rules (YAML 1.2 core schema plus its int/float quirks), not
PyYAML's YAML 1.1 rules, so ``yes``, ``0o17``, ``1e3`` or ``017`` mean what they mean to the Go server.
"""
from __future__ import annotations

import calendar
import re

import yaml

from . import _go

_LONG = "tag:yaml.org,2002:"
_IMPLICIT = "?"  # our marker for "no explicit tag"


# libyaml (the C parser PyYAML wheels ship) is the parser yaml.v3 was ported from; PyYAML's pure-Python
# scanner differs in corners (it rejects a tab inside a plain scalar). Use it whenever it is there.
_Base = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


def short_tag(tag: str) -> str:
    if tag.startswith(_LONG):
        return "!!" + tag[len(_LONG):]
    return tag


# ---- yaml.v3 resolve() for plain scalars -------------------------------------------------------

_RESOLVE_MAP = {}
for _tag, _words in (("!!bool", ("true", "True", "TRUE", "false", "False", "FALSE")),
                     ("!!null", ("", "~", "null", "Null", "NULL")),
                     ("!!float", (".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
                                  "-.inf", "-.Inf", "-.INF")),
                     ("!!merge", ("<<",))):
    for _w in _words:
        _RESOLVE_MAP[_w] = _tag

_HINT = {c: "S" for c in "+-"}
_HINT.update({c: "D" for c in "0123456789"})
_HINT.update({c: "M" for c in "yYnNtTfFoO~<"})
_HINT["."] = "."

_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")


def _go_parse_uint(s: str, base: int, bits: int = 64) -> int:
    """strconv.ParseUint: raises ValueError on a syntax or range error."""
    if not s:
        raise ValueError
    s0, base0 = s, base == 0
    if base == 0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1].lower() == "b":
                base, s = 2, s[2:]
            elif len(s) >= 3 and s[1].lower() == "o":
                base, s = 8, s[2:]
            elif len(s) >= 3 and s[1].lower() == "x":
                base, s = 16, s[2:]
            else:
                base, s = 8, s[1:]
    n, underscores = 0, False
    for c in s:
        if c == "_" and base0:
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - 48
        elif "a" <= c.lower() <= "z":
            d = ord(c.lower()) - 87
        else:
            raise ValueError
        if d >= base:
            raise ValueError
        n = n * base + d
    if n >= 1 << bits:
        raise ValueError
    if underscores and not _go._underscore_ok(s0):
        raise ValueError
    return n


def _go_parse_int(s: str, base: int) -> int:
    """strconv.ParseInt(s, base, 64)."""
    if not s:
        raise ValueError
    neg = False
    if s[0] == "+":
        s = s[1:]
    elif s[0] == "-":
        neg, s = True, s[1:]
    un = _go_parse_uint(s, base)
    if (not neg and un >= 1 << 63) or (neg and un > 1 << 63):
        raise ValueError
    return -un if neg else un


_TS_DATE = r"(\d{4})-(\d{1,2})-(\d{1,2})"
_TS_TIME = r"(\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,]\d+)?"
_TS = [re.compile(_TS_DATE + r"T" + _TS_TIME + r"(Z|[+-]\d{2}:\d{2})\Z"),
       re.compile(_TS_DATE + r"t" + _TS_TIME + r"(Z|[+-]\d{2}:\d{2})\Z"),
       re.compile(_TS_DATE + r" " + _TS_TIME + r"\Z"),
       re.compile(_TS_DATE + r"\Z")]


def _is_timestamp(s: str) -> bool:
    """yaml.v3 parseTimestamp (time.Parse with its four layouts)."""
    for rx in _TS:
        m = rx.match(s)
        if not m:
            continue
        g = m.groups()
        y, mo, d = int(g[0]), int(g[1]), int(g[2])
        if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1]):
            continue
        if len(g) > 3 and not (int(g[3]) < 24 and int(g[4]) < 60 and int(g[5]) < 60):
            continue
        return True
    return False


def resolve_plain(s: str) -> str:
    """The tag yaml.v3 gives a plain (unquoted, untagged) scalar."""
    hint = _HINT.get(s[0], "") if s else "N"
    if not hint:
        return "!!str"
    if s in _RESOLVE_MAP:
        return _RESOLVE_MAP[s]
    if hint == ".":
        try:
            _go.parse_float(s)
            return "!!float"
        except ValueError:
            return "!!str"
    if hint in "DS":
        if _is_timestamp(s):
            return "!!timestamp"
        plain = s.replace("_", "")
        for parse in (lambda: _go_parse_int(plain, 0), lambda: _go_parse_uint(plain, 0)):
            try:
                parse()
                return "!!int"
            except ValueError:
                pass
        if _YAML_STYLE_FLOAT.match(plain):
            try:
                _go.parse_float(plain)
                return "!!float"
            except ValueError:
                pass
        attempts = []
        if plain.startswith("0b"):
            attempts = [lambda: _go_parse_int(plain[2:], 2), lambda: _go_parse_uint(plain[2:], 2)]
        elif plain.startswith("-0b"):
            attempts = [lambda: _go_parse_int("-" + plain[3:], 2)]
        if plain.startswith("0o"):
            attempts += [lambda: _go_parse_int(plain[2:], 8), lambda: _go_parse_uint(plain[2:], 8)]
        elif plain.startswith("-0o"):
            attempts += [lambda: _go_parse_int("-" + plain[3:], 8)]
        for parse in attempts:
            try:
                parse()
                return "!!int"
            except ValueError:
                pass
    return "!!str"


class Scalar:
    """What config/yaml.go looks at in a yaml.v3 scalar node."""

    __slots__ = ("value", "tag", "quoted", "line")

    def __init__(self, value, tag, quoted, line):
        self.value, self.tag, self.quoted, self.line = value, tag, quoted, line


def node_tag(n) -> str:
    """yaml.v3 Node.ShortTag()."""
    explicit = n.tag != _IMPLICIT and n.tag != "!"
    if isinstance(n, yaml.ScalarNode):
        if explicit:
            return short_tag(n.tag)
        if n.style:  # quoted, literal or folded (plain is None or "")
            return "!!str"
        return resolve_plain(n.value)
    if explicit:
        return short_tag(n.tag)
    return "!!map" if isinstance(n, yaml.MappingNode) else "!!seq"


def yaml_type(n) -> str:
    if isinstance(n, yaml.MappingNode):
        return "a mapping"
    if isinstance(n, yaml.SequenceNode):
        return "a sequence"
    t = node_tag(n)
    return {"!!str": "a string", "!!int": "an integer", "!!float": "a float", "!!bool": "a boolean",
            "!!null": "null"}.get(t, t)


def node_string(n) -> str:
    if isinstance(n, yaml.ScalarNode):
        return n.value
    return "<" + yaml_type(n) + ">"


def line_of(n) -> int:
    return n.start_mark.line + 1


class YAMLSyntaxError(Exception):
    def __init__(self, message, line=0):
        super().__init__(message)
        self.message, self.line = message, line


def compose(data: bytes):
    """The root node of the only document (None when there is none), composed from parser events as
    yaml.v3 does it (an anchor may be redefined; only "%YAML 1.1" is accepted).

    Raises YAMLSyntaxError for malformed YAML or a second document (with that document's line)."""
    try:
        it = yaml.parse(data, Loader=_Base)
        next(it)  # StreamStart
        ev = next(it)
        if isinstance(ev, yaml.StreamEndEvent):
            return None
        _check_version(ev)
        root = _compose_node(it, next(it), {})
        next(it)  # DocumentEnd
        ev = next(it)
        if isinstance(ev, yaml.DocumentStartEvent):
            line = ev.start_mark.line + 1
            _check_version(ev)
            depth = 0
            for ev in it:  # yaml.v3 decodes the whole second document before noticing it
                if isinstance(ev, yaml.DocumentEndEvent) and depth == 0:
                    break
                if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                    depth += 1
                elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                    depth -= 1
            raise YAMLSyntaxError("multiple YAML documents are not supported", line)
        return root
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if mark is not None:
            raise YAMLSyntaxError(f"yaml: line {mark.line + 1}: {problem}") from None
        raise YAMLSyntaxError(f"yaml: {problem}") from None
    except yaml.YAMLError as e:
        raise YAMLSyntaxError(f"yaml: {e}") from None


def _check_version(ev):
    if ev.version not in (None, (1, 1)):
        raise YAMLSyntaxError("yaml: found incompatible YAML document")


def _compose_node(it, ev, anchors):
    if isinstance(ev, yaml.AliasEvent):
        if ev.anchor not in anchors:
            raise YAMLSyntaxError(f"yaml: unknown anchor '{ev.anchor}' referenced")
        return anchors[ev.anchor]
    tag = ev.tag or _IMPLICIT
    if isinstance(ev, yaml.ScalarEvent):
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, style=ev.style)
    elif isinstance(ev, yaml.SequenceStartEvent):
        node = yaml.SequenceNode(tag, [], ev.start_mark, None, flow_style=ev.flow_style)
        for child in iter(lambda: next(it), None):
            if isinstance(child, yaml.SequenceEndEvent):
                break
            node.value.append(_compose_node(it, child, anchors))
    elif isinstance(ev, yaml.MappingStartEvent):
        node = yaml.MappingNode(tag, [], ev.start_mark, None, flow_style=ev.flow_style)
        for child in iter(lambda: next(it), None):
            if isinstance(child, yaml.MappingEndEvent):
                break
            key = _compose_node(it, child, anchors)
            node.value.append((key, _compose_node(it, next(it), anchors)))
    else:
        raise YAMLSyntaxError(f"yaml: unexpected {type(ev).__name__}")
    if ev.anchor is not None:
        anchors[ev.anchor] = node
    return node
