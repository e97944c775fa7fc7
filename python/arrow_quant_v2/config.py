"""DiffusionQuantConfig: the configuration guide's parameters, profiles, YAML and environment.

This is a line-for-line port of the Go package ``config`` (config.go, fields.go, yaml.go, resolve.go,
errors.go): the same defaults, the same rules in the same order, the same parsing and the same error
messages. ``config/testdata/vectors.json`` is run against both implementations.
"""
from __future__ import annotations

import enum
import math
import numbers
import os
from typing import Any, Mapping, Optional

from . import _go, _yaml
from .errors import (VALIDATION_KINDS, ConfigFileError, EnvError, InvalidProfile, ParseError, UnknownKey,
                     ValidationError, combine)


class DeploymentProfile(str, enum.Enum):
    """A deployment profile: the presets for every parameter."""

    Edge = "edge"
    Local = "local"
    Cloud = "cloud"

    def __str__(self) -> str:
        return self.value


# key, environment variable (None if none), kind -- in struct order (config/fields.go).
_FIELDS = [
    ("bit_width", "ARROW_QUANT_BIT_WIDTH", "int"),
    ("modality", "ARROW_QUANT_MODALITY", "modality"),
    ("num_time_groups", "ARROW_QUANT_NUM_TIME_GROUPS", "int"),
    ("enable_time_aware", None, "bool"),
    ("group_size", "ARROW_QUANT_GROUP_SIZE", "int"),
    ("enable_spatial", None, "bool"),
    ("min_accuracy", "ARROW_QUANT_MIN_ACCURACY", "float"),
    ("calibration_samples", "ARROW_QUANT_CALIBRATION_SAMPLES", "int"),
    ("deployment_profile", "ARROW_QUANT_DEPLOYMENT_PROFILE", "profile"),
    ("fail_fast", "ARROW_QUANT_FAIL_FAST", "bool"),
    ("num_threads", "ARROW_QUANT_NUM_THREADS", "int"),
    ("enable_streaming", "ARROW_QUANT_ENABLE_STREAMING", "bool"),
    ("target", "ARROW_QUANT_TARGET", "target"),
]
KEYS = [f[0] for f in _FIELDS]
_KIND = {f[0]: f[2] for f in _FIELDS}
_ENV = {f[0]: f[1] for f in _FIELDS}
# The guide's order, then the profile, the modality and the export target.
_ENV_ORDER = ["bit_width", "num_time_groups", "group_size", "min_accuracy", "calibration_samples", "fail_fast",
              "num_threads", "enable_streaming", "deployment_profile", "modality", "target"]
ENV_VARS = [_ENV[k] for k in _ENV_ORDER]

PROFILES = ("edge", "local", "cloud")
MODALITIES = ("text", "code", "image", "audio")
TARGETS = ("gguf",)

_RULES = {
    "InvalidBitWidth": "bit_width must be 2, 4 or 8",
    "InvalidModality": "modality must be text, code, image, audio or null (auto-detect)",
    "InvalidTimeGroups": "num_time_groups must be between 1 and 100",
    "InvalidGroupSize": "group_size must be 32, 64, 128 or 256",
    "InvalidAccuracy": "min_accuracy must be between 0.0 and 1.0",
    "InvalidCalibrationSamples": "calibration_samples must be at least 1",
    "InvalidProfile": "deployment_profile must be edge, local or cloud",
    "InvalidNumThreads": "num_threads must be 0 (all cores) or more",
    "InvalidTarget": "target must be gguf or null (no export target)",
}

_ERR_INT = "expected a base-10 integer"
_ERR_INT_RANGE = "integer out of range"
_ERR_FLOAT = "expected a number"
_ERR_BOOL = "expected true, false, 1, 0, yes or no"


def _presets(p: str) -> dict:
    """FromProfile: the presets of p (local's for an unknown p, keeping p so validate() reports it)."""
    c = dict(bit_width=4, modality="", num_time_groups=10, enable_time_aware=True, group_size=128,
             enable_spatial=True, min_accuracy=0.85, calibration_samples=128, deployment_profile=p,
             fail_fast=False, num_threads=0, enable_streaming=False, target="")
    if p == "edge":
        c.update(bit_width=2, num_time_groups=5, group_size=256, enable_spatial=False, min_accuracy=0.65,
                 calibration_samples=32, enable_streaming=True)
    elif p == "cloud":
        c.update(bit_width=8, num_time_groups=20, group_size=64, min_accuracy=0.95, calibration_samples=512)
    return c


# ---- errors, formatted as in config/errors.go ---------------------------------------------------

def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go.format_float(v)
    return _go.quote(str(v))


def _validation_error(kind: str, field: str, value):
    return VALIDATION_KINDS[kind](f"{kind}({_fmt_value(value)}): {_RULES[kind]}", field=field, value=value)


class _Invalid(Exception):
    """An UnknownProfileError / UnknownModalityError before it is wrapped."""

    def __init__(self, kind, value):
        self.kind, self.value = kind, value
        self.text = f"{kind}({_go.quote(value)}): {_RULES[kind]}"
        super().__init__(self.text)


def _where(source: str, line: int) -> str:
    return (f"{source}: " if source else "") + (f"line {line}: " if line > 0 else "")


def _parse_error(key, value, source, line, err):
    """ParseError{Key, Value, Source, Line, Err}; Kind is the validation kind inside Err, if any."""
    text = err.text if isinstance(err, _Invalid) else str(err)
    if key:
        msg = _where(source, line) + f"invalid value {_go.quote(value)} for {key}: {text}"
    else:
        msg = _where(source, line) + text
    cls = combine(VALIDATION_KINDS[err.kind], ParseError) if isinstance(err, _Invalid) else ParseError
    return cls(msg, key=key, value=value, source=source, line=line)


def _unknown_key(key, source="", line=0):
    return UnknownKey(_where(source, line) + f"unknown key {_go.quote(key)} (valid keys: {', '.join(KEYS)})",
                      key=key, source=source, line=line)


def _env_error(var, value, err):
    text = err.text if isinstance(err, _Invalid) else str(err)
    msg = f"invalid environment variable {var}={_go.quote(value)}: {text}"
    cls = combine(VALIDATION_KINDS[err.kind], EnvError) if isinstance(err, _Invalid) else EnvError
    return cls(msg, var=var, value=value)


# ---- parsing -------------------------------------------------------------------------------------

def parse_profile(s) -> str:
    """ParseProfile: case and surrounding space ignored; raises InvalidProfile."""
    if isinstance(s, DeploymentProfile):
        return s.value
    if not isinstance(s, str):
        raise InvalidProfile(f"InvalidProfile({_go.quote(str(s))}): {_RULES['InvalidProfile']}", value=s)
    try:
        return _profile(s)
    except _Invalid as e:
        raise InvalidProfile(e.text, value=s) from None


def _profile(s: str) -> str:
    p = _go.to_lower(_go.trim_space(s))
    if p in PROFILES:
        return p
    raise _Invalid("InvalidProfile", s)


def _modality(s: str) -> str:
    m = _go.to_lower(_go.trim_space(s))
    if m in ("", "null", "auto"):
        return ""
    if m in MODALITIES:
        return m
    raise _Invalid("InvalidModality", s)


def _target(s: str) -> str:
    t = _go.to_lower(_go.trim_space(s))
    if t in ("", "null", "none"):
        return ""
    if t in TARGETS:
        return t
    raise _Invalid("InvalidTarget", s)


def _parse_string(kind: str, s: str):
    """parseString: a value as written in an environment variable, an override or a YAML scalar."""
    s = _go.trim_space(s)
    if kind == "int":
        try:
            return _go.parse_int(s)
        except _go.GoRangeError:
            raise ValueError(_ERR_INT_RANGE) from None
        except ValueError:
            raise ValueError(_ERR_INT) from None
    if kind == "float":
        try:
            return _go.parse_float(s)
        except ValueError:
            raise ValueError(_ERR_FLOAT) from None
    if kind == "bool":
        low = _go.to_lower(s)
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(_ERR_BOOL)
    if kind == "modality":
        return _modality(s)
    if kind == "target":
        return _target(s)
    return _profile(s)


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, (bool,)) or type(v).__name__ == "bool_":
        return "a boolean"
    if isinstance(v, numbers.Number):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "an array"
    return type(v).__name__


def _json_string(v) -> str:
    """jsonString: how a value is shown in a ParseError from a mapping."""
    if v is None:
        return "null"
    if isinstance(v, DeploymentProfile):
        return v.value
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Real):
        try:
            return _go.format_float(float(v))
        except OverflowError:
            return str(v)
    try:
        return _go.json_marshal(v)
    except (TypeError, ValueError):
        return str(v)


_LIMIT = float(1 << 63)


def _float_to_int(f: float) -> int:
    if not math.isfinite(f) or f != math.trunc(f):
        raise ValueError("expected an integer")
    if f < -_LIMIT or f >= _LIMIT:
        raise ValueError(_ERR_INT_RANGE)
    return int(f)


def _is_bool(v) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"


def _parse_value(kind: str, v):
    """parseJSON: a value from a decoded JSON object, a Python keyword argument or an attribute assignment."""
    if kind == "int":
        if _is_bool(v):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(v, numbers.Integral):
            v = int(v)
            if v < _go.INT64_MIN or v > _go.INT64_MAX:
                raise ValueError(_ERR_INT_RANGE)
            return v
        if isinstance(v, numbers.Real):
            return _float_to_int(float(v))
        raise ValueError(f"expected an integer, got {_json_type(v)}")
    if kind == "float":
        if _is_bool(v):
            raise ValueError("expected a number, got a boolean")
        if isinstance(v, numbers.Real):
            try:
                return float(v)
            except OverflowError:
                raise ValueError(_ERR_FLOAT) from None
        raise ValueError(f"expected a number, got {_json_type(v)}")
    if kind == "bool":
        if _is_bool(v):
            return bool(v)
        raise ValueError(f"expected a boolean, got {_json_type(v)}")
    if kind == "modality":
        if v is None:
            return ""
        if isinstance(v, str):
            return _modality(v)
        raise ValueError(f"expected a string or null, got {_json_type(v)}")
    if kind == "target":
        if v is None:
            return ""
        if isinstance(v, str):
            return _target(v)
        raise ValueError(f"expected a string or null, got {_json_type(v)}")
    if isinstance(v, DeploymentProfile):
        return v.value
    if isinstance(v, str):
        return _profile(v)
    raise ValueError(f"expected a string, got {_json_type(v)}")


def _convert(key: str, v, source: str = ""):
    """One key of a mapping: unknown key -> UnknownKey; bad value -> ParseError (or the validation kind)."""
    if key not in _KIND:
        raise _unknown_key(key, source)
    try:
        return _parse_value(_KIND[key], v)
    except (ValueError, _Invalid) as e:
        raise _parse_error(key, _json_string(v), source, 0, e) from None


def _env_patch(env: Mapping[str, str]) -> list:
    patch = []
    for key in _ENV_ORDER:
        var = _ENV[key]
        val = env.get(var)
        if val is None or _go.trim_space(val) == "":
            continue
        try:
            patch.append((key, _parse_string(_KIND[key], val)))
        except (ValueError, _Invalid) as e:
            raise _env_error(var, val, e) from None
        patch[-1] += (var,)
    return patch


def _yaml_doc(data: bytes, source: str):
    """parseYAML: (profile or None, [(key, value), ...]) of a configuration file's text."""
    try:
        root = _yaml.compose(data)
    except _yaml.YAMLSyntaxError as e:
        raise _parse_error("", "", source, e.line, ValueError(e.message)) from None
    if root is None:
        return None, []
    import yaml as _pyyaml
    if isinstance(root, _pyyaml.ScalarNode) and _yaml.node_tag(root) == "!!null":
        return None, []
    if not isinstance(root, _pyyaml.MappingNode):
        raise _parse_error("", "", source, _yaml.line_of(root), ValueError(
            f"expected a mapping of parameter keys to values, got {_yaml.yaml_type(root)}"))
    profile, settings, seen = None, [], {}
    for k, v in root.value:
        if not isinstance(k, _pyyaml.ScalarNode):
            raise _parse_error("", "", source, _yaml.line_of(k),
                               ValueError(f"expected a key, got {_yaml.yaml_type(k)}"))
        key = k.value
        if key not in _KIND:
            raise _unknown_key(key, source, _yaml.line_of(k))
        if key in seen:
            raise _parse_error(key, _yaml.node_string(v), source, _yaml.line_of(k),
                               ValueError(f"duplicate key (first set on line {seen[key]})"))
        seen[key] = _yaml.line_of(k)
        try:
            val = _yaml_value(_KIND[key], v)
        except (ValueError, _Invalid) as e:
            raise _parse_error(key, _yaml.node_string(v), source, _yaml.line_of(v), e) from None
        if key == "deployment_profile":
            profile = val
            continue
        settings.append((key, val, f"{source}:{_yaml.line_of(v)}"))
    return profile, settings


_WANT_YAML = {"int": "an integer", "float": "a number", "bool": "a boolean", "modality": "a string or null",
              "profile": "a string", "target": "a string or null"}


def _yaml_value(kind: str, n):
    import yaml as _pyyaml
    if not isinstance(n, _pyyaml.ScalarNode):
        raise ValueError(f"expected {_WANT_YAML[kind]}, got {_yaml.yaml_type(n)}")
    tag = _yaml.node_tag(n)
    quoted = n.style in ("'", '"')
    if kind == "int":
        ok = tag == "!!int"
    elif kind == "float":
        ok = tag in ("!!int", "!!float")
    elif kind == "bool":
        ok = tag == "!!bool" or (not quoted and tag in ("!!str", "!!int"))
    elif kind in ("modality", "target"):
        if tag == "!!null":
            return ""
        ok = tag == "!!str"
    else:
        ok = tag == "!!str"
    if not ok:
        raise ValueError(f"expected {_WANT_YAML[kind]}, got {_yaml.yaml_type(n)}")
    return _parse_string(kind, n.value)


# ---- the configuration ---------------------------------------------------------------------------

class DiffusionQuantConfig:
    """The quantization parameters of the configuration guide.

    ``DiffusionQuantConfig(**fields)`` starts from the presets of ``deployment_profile`` (local when not
    given) and sets the given fields, like a YAML file does. Fields are type-checked on every assignment
    (``config.bit_width = "4"`` raises ParseError, an unknown name raises UnknownKey); ranges are checked
    by ``validate()``, which ``from_profile``, ``from_yaml`` and ``quantize_diffusion_model`` call.
    """

    __slots__ = tuple("_" + k for k in KEYS)

    bit_width: int
    modality: Optional[str]
    num_time_groups: int
    enable_time_aware: bool
    group_size: int
    enable_spatial: bool
    min_accuracy: float
    calibration_samples: int
    deployment_profile: str
    fail_fast: bool
    num_threads: int
    enable_streaming: bool
    target: Optional[str]

    def __init__(self, **fields: Any):
        base = "local"
        if "deployment_profile" in fields:
            base = _convert("deployment_profile", fields["deployment_profile"])
        values = _presets(base)
        for key in sorted(fields):
            values[key] = _convert(key, fields[key])
        self._set_all(values)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def _from_values(cls, values: dict) -> "DiffusionQuantConfig":
        c = cls.__new__(cls)
        c._set_all(values)
        return c

    @classmethod
    def default(cls) -> "DiffusionQuantConfig":
        """The local profile's presets (Go's config.Default())."""
        return cls._from_values(_presets("local"))

    @classmethod
    def from_profile(cls, profile) -> "DiffusionQuantConfig":
        """The presets of a DeploymentProfile or its name ("edge", "local", "cloud"; any case)."""
        c = cls._from_values(_presets(parse_profile(profile)))
        c.validate()
        return c

    @classmethod
    def _unvalidated_profile(cls, profile: str) -> "DiffusionQuantConfig":
        """Go's FromProfile(p) as is: an unknown p keeps local presets and fails validate()."""
        return cls._from_values(_presets(profile))

    @classmethod
    def from_yaml(cls, path) -> "DiffusionQuantConfig":
        """Load a YAML file on top of the presets of its deployment_profile (local if absent); validated.

        Unknown keys, values of the wrong YAML type and invalid values raise (UnknownKey, ParseError,
        InvalidBitWidth, ...), with the file and line in the message."""
        return cls.resolve(yaml_path=path)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> "DiffusionQuantConfig":
        """Like the constructor, from a mapping (e.g. ``to_dict()`` or a parsed JSON object)."""
        return cls(**dict(mapping))

    @classmethod
    def resolve(cls, profile: Optional[str] = None, yaml_path=None, env: Optional[Mapping[str, str]] = None,
                overrides: Optional[Mapping[str, str]] = None) -> "DiffusionQuantConfig":
        """Go's config.Resolve, as the CLI and the server use it: profile presets < YAML file <
        ARROW_QUANT_* environment (pass ``env=os.environ``) < overrides (strings, as on a command line).

        The base profile comes from the highest source naming one: ``profile``, then
        ``overrides["deployment_profile"]``, then ARROW_QUANT_DEPLOYMENT_PROFILE, then the file's
        deployment_profile, else local. Every source is parsed before anything is applied."""
        ydoc_profile, ysettings = None, []
        if yaml_path is not None and str(yaml_path) != "":
            path = os.fspath(yaml_path)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                op = "read" if isinstance(e, IsADirectoryError) else "open"
                raise ConfigFileError(f"config: {op} {path}: {_os_reason(e)}", errno=e.errno,
                                      filename=path) from None
            ydoc_profile, ysettings = _yaml_doc(data, path)
        env_p = _env_patch(env) if env is not None else []
        over = []
        for key in sorted(overrides or {}):
            if key not in _KIND:
                raise _unknown_key(key, "override")
            raw = overrides[key]
            try:
                over.append((key, _parse_string(_KIND[key], raw), "override"))
            except (ValueError, _Invalid) as e:
                raise _parse_error(key, raw, "override", 0, e) from None
        base = "local"
        if ydoc_profile is not None:
            base = ydoc_profile
        for patch in (env_p, over):
            for key, val, _ in patch:
                if key == "deployment_profile":
                    base = val
        if profile is not None and profile != "":
            praw = profile.value if isinstance(profile, DeploymentProfile) else str(profile)
            try:
                base = _profile(praw)
            except _Invalid as e:
                raise _parse_error("deployment_profile", praw, "profile option", 0, e) from None
        values, source = _presets(base), {}
        for patch in (ysettings, env_p, over):
            for key, val, src in patch:
                if key != "deployment_profile":
                    values[key], source[key] = val, src
        c = cls._from_values(values)
        try:
            c.validate()
        except ValidationError as e:  # as Go's SourcedError: the guide's message, then where the value was set
            field = getattr(e, "field", None)
            if field in source:
                raise type(e)(f"{e} (set by {source[field]})", field=field, value=getattr(e, "value", None)) from None
            raise
        return c

    # -- mutation -------------------------------------------------------------------------------
    def _set_all(self, values: dict) -> None:
        for k in KEYS:
            object.__setattr__(self, "_" + k, values[k])

    def __getattr__(self, name):
        if name in _KIND:
            v = object.__getattribute__(self, "_" + name)
            return (v or None) if name in ("modality", "target") else v
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name.startswith("_") and name[1:] in _KIND:
            object.__setattr__(self, name, value)
            return
        object.__setattr__(self, "_" + name if name in _KIND else name, _convert(name, value))

    def update(self, mapping: Mapping[str, Any]) -> "DiffusionQuantConfig":
        """Go's ApplyMap: set fields from a mapping in sorted key order, all or nothing.
        deployment_profile only sets the field (no re-basing on its presets)."""
        new = {k: object.__getattribute__(self, "_" + k) for k in KEYS}
        for key in sorted(mapping):
            new[key] = _convert(key, mapping[key])
        self._set_all(new)
        return self

    def apply_env_overrides(self, env: Optional[Mapping[str, str]] = None) -> "DiffusionQuantConfig":
        """Apply the ARROW_QUANT_* variables (Go's config.ApplyEnv): BIT_WIDTH, NUM_TIME_GROUPS,
        GROUP_SIZE, MIN_ACCURACY, CALIBRATION_SAMPLES, FAIL_FAST, NUM_THREADS, ENABLE_STREAMING,
        DEPLOYMENT_PROFILE, MODALITY and TARGET, read from ``env`` (default ``os.environ``).

        Empty variables are unset. A malformed value raises EnvError naming the variable (an unknown
        profile or modality is also InvalidProfile / InvalidModality) and changes nothing.
        ARROW_QUANT_DEPLOYMENT_PROFILE sets the field only; to re-base on that profile's presets use
        ``DiffusionQuantConfig.resolve(yaml_path=..., env=os.environ)``. Returns self."""
        patch = _env_patch(os.environ if env is None else env)
        new = {k: object.__getattribute__(self, "_" + k) for k in KEYS}
        new.update((k, v) for k, v, _ in patch)
        self._set_all(new)
        return self

    def validate(self) -> "DiffusionQuantConfig":
        """Check every rule in field order; raise the first failure (InvalidBitWidth(3): ...). Returns self."""
        g = lambda k: object.__getattribute__(self, "_" + k)  # noqa: E731
        if g("bit_width") not in (2, 4, 8):
            raise _validation_error("InvalidBitWidth", "bit_width", g("bit_width"))
        if g("modality") not in ("",) + MODALITIES:
            raise _validation_error("InvalidModality", "modality", g("modality"))
        if not 1 <= g("num_time_groups") <= 100:
            raise _validation_error("InvalidTimeGroups", "num_time_groups", g("num_time_groups"))
        if g("group_size") not in (32, 64, 128, 256):
            raise _validation_error("InvalidGroupSize", "group_size", g("group_size"))
        acc = g("min_accuracy")
        if not (acc >= 0 and acc <= 1):
            raise _validation_error("InvalidAccuracy", "min_accuracy", acc)
        if g("calibration_samples") < 1:
            raise _validation_error("InvalidCalibrationSamples", "calibration_samples", g("calibration_samples"))
        if g("deployment_profile") not in PROFILES:
            raise _validation_error("InvalidProfile", "deployment_profile", g("deployment_profile"))
        if g("num_threads") < 0:
            raise _validation_error("InvalidNumThreads", "num_threads", g("num_threads"))
        if g("target") not in ("",) + TARGETS:
            raise _validation_error("InvalidTarget", "target", g("target"))
        return self

    # -- views ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every parameter in the guide's (struct) order; modality None for auto-detect, target None for none."""
        return {k: getattr(self, k) for k in KEYS}

    def copy(self) -> "DiffusionQuantConfig":
        return type(self)._from_values({k: object.__getattribute__(self, "_" + k) for k in KEYS})

    def __eq__(self, other):
        if not isinstance(other, DiffusionQuantConfig):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        return all(a[k] == b[k] or (k == "min_accuracy" and math.isnan(a[k]) and math.isnan(b[k])) for k in KEYS)

    __hash__ = None

    def __repr__(self) -> str:
        return "DiffusionQuantConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def __dir__(self):
        return sorted(set(KEYS) | set(type(self).__dict__) | {"to_dict", "validate"})


def _os_reason(e: OSError) -> str:
    """The Go spelling of common open errors (syscall.Errno strings are lower case)."""
    import errno as _errno
    return {_errno.ENOENT: "no such file or directory", _errno.EACCES: "permission denied",
            _errno.EISDIR: "is a directory"}.get(e.errno, (e.strerror or str(e)).lower())
