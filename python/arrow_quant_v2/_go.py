"""Go-compatible formatting and parsing, so that values and messages match the Go side exactly.

These mirror strconv.FormatFloat(v, 'g', -1, 64), strconv.Quote, strconv.ParseInt(s, 10, 64),
strconv.ParseFloat(s, 64), strings.TrimSpace and strings.ToLower as the Go configuration package uses them.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# unicode.IsSpace: Latin-1 spaces plus the White_Space property.
_GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
             "\u2028\u2029\u202f\u205f\u3000")


def trim_space(s: str) -> str:
    """strings.TrimSpace."""
    return s.strip(_GO_SPACE)


def to_lower(s: str) -> str:
    """strings.ToLower (simple case mapping: U+0130 lowers to a plain 'i', as in Go)."""
    return s.replace("\u0130", "i").lower()


def format_float(v: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64): shortest digits, exponent form below 1e-4 or from 1e6 on."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    neg = math.copysign(1.0, v) < 0
    if v == 0:
        return "-0" if neg else "0"
    _, digits, exp = Decimal(repr(abs(v))).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0")
    exp += len(digits) - len(ds)
    nd = len(ds)
    dp = nd + exp  # position of the decimal point relative to the digits
    e10 = dp - 1
    sign = "-" if neg else ""
    if e10 < -4 or e10 >= 6:
        mant = ds[0] + ("." + ds[1:] if nd > 1 else "")
        return f"{sign}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    if dp <= 0:
        return sign + "0." + "0" * (-dp) + ds
    if dp >= nd:
        return sign + ds + "0" * (dp - nd)
    return sign + ds[:dp] + "." + ds[dp:]


_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v",
            '"': r"\"", "\\": r"\\"}


def quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= c <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append("\\x%02x" % (c - 0xDC00))
        elif 0xD800 <= c <= 0xDFFF:
            out.append("\\ufffd")
        elif ch.isprintable():
            out.append(ch)
        elif c < 0x20 or c == 0x7F:
            out.append("\\x%02x" % c)
        elif c < 0x10000:
            out.append("\\u%04x" % c)
        else:
            out.append("\\U%08x" % c)
    out.append('"')
    return "".join(out)


class GoSyntaxError(ValueError):
    pass


class GoRangeError(ValueError):
    pass


_INT_RE = re.compile(r"[+-]?[0-9]+\Z")


def parse_int(s: str) -> int:
    """strconv.ParseInt(s, 10, 64)."""
    if not _INT_RE.match(s):
        raise GoSyntaxError(s)
    v = int(s)
    if v < INT64_MIN or v > INT64_MAX:
        raise GoRangeError(s)
    return v


def _underscore_ok(s: str) -> bool:
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def _special(s: str):
    """strconv's special(): (value, consumed) for inf/infinity/nan prefixes, else None."""
    if not s:
        return None
    sign, nsign, rest = 1.0, 0, s
    if s[0] in "+-":
        sign, nsign, rest = (-1.0 if s[0] == "-" else 1.0), 1, s[1:]
        kind = "i"
    else:
        kind = s[0].lower()
    if kind == "i":
        n = 0
        for a, b in zip(rest.lower(), "infinity"):
            if a != b:
                break
            n += 1
        if 3 < n < 8:
            n = 3
        if n in (3, 8):
            return math.copysign(math.inf, sign), nsign + n
    elif kind == "n":
        if rest[:3].lower() == "nan":
            return math.nan, 3
    return None


def parse_float(s: str) -> float:
    """strconv.ParseFloat(s, 64): Go's float literal syntax (decimal and hex, underscores between digits),
    inf/infinity/nan; a finite literal that overflows is an error."""
    sp = _special(s)
    if sp is not None:
        if sp[1] != len(s):
            raise GoSyntaxError(s)
        return sp[0]
    i, n = 0, len(s)
    if i < n and s[i] in "+-":
        i += 1
    hexa = i + 2 < n and s[i] == "0" and s[i + 1] in "xX"
    if hexa:
        i += 2
    digits = "0123456789abcdefABCDEF" if hexa else "0123456789"
    sawdot = sawdigits = underscores = False
    while i < n:
        c = s[i]
        if c == "_":
            underscores = True
        elif c == ".":
            if sawdot:
                break
            sawdot = True
        elif c in digits:
            sawdigits = True
        else:
            break
        i += 1
    if not sawdigits:
        raise GoSyntaxError(s)
    expch = "pP" if hexa else "eE"
    if i < n and s[i] in expch:
        i += 1
        if i >= n:
            raise GoSyntaxError(s)
        if s[i] in "+-":
            i += 1
        if i >= n or not ("0" <= s[i] <= "9"):
            raise GoSyntaxError(s)
        while i < n and ("0" <= s[i] <= "9" or s[i] == "_"):
            if s[i] == "_":
                underscores = True
            i += 1
    elif hexa:
        raise GoSyntaxError(s)  # a hex mantissa needs a 'p' exponent
    if i != n:
        raise GoSyntaxError(s)
    if underscores and not _underscore_ok(s):
        raise GoSyntaxError(s)
    clean = s.replace("_", "")
    try:
        v = float.fromhex(clean) if hexa else float(clean)
    except OverflowError:
        raise GoRangeError(s) from None
    if math.isinf(v):
        raise GoRangeError(s)
    return v


def json_marshal(v) -> str:
    """encoding/json.Marshal of a decoded JSON value (object keys sorted, HTML characters escaped)."""
    import json

    def norm(x):
        if isinstance(x, float):
            return x
        return x

    out = json.dumps(norm(v), separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False,
                     default=str)
    return (out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
