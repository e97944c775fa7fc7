"""The exceptions of arrow_quant_v2. Every one is a QuantError.

Configuration errors carry the Go configuration package's kind and message exactly
(``InvalidBitWidth(3): bit_width must be 2, 4 or 8``). ``e.kind`` is what Go's ``config.Kind(err)``
returns; the class is the kind's class, so ``except InvalidModality`` catches an unknown modality
whether it came from validate(), a YAML file or an environment variable, and ``except EnvError`` /
``except ParseError`` catch it too when it came from there.

Server errors are the Flight call's gRPC status: ``InvalidArgument``, ``NotFound``, ... (see
``ServerError``); an invalid configuration rejected by the server is also the matching
validation class.
"""
from __future__ import annotations


class QuantError(Exception):
    """Base class of every arrow_quant_v2 error. ``str(e)`` is the full message."""

    kind = "QuantError"

    def __init__(self, message: str, **attrs):
        super().__init__(message)
        self.message = message
        for k, v in attrs.items():
            setattr(self, k, v)

    def __str__(self) -> str:
        return self.message


# ---- configuration ---------------------------------------------------------------------------

class ConfigError(QuantError):
    """Any configuration problem."""
    kind = "ConfigError"


class ValidationError(ConfigError):
    """A parameter value breaks a validation rule. ``field`` and ``value`` name it."""
    kind = "ValidationError"


class InvalidBitWidth(ValidationError):
    kind = "InvalidBitWidth"


class InvalidModality(ValidationError):
    kind = "InvalidModality"


class InvalidTimeGroups(ValidationError):
    kind = "InvalidTimeGroups"


class InvalidGroupSize(ValidationError):
    kind = "InvalidGroupSize"


class InvalidAccuracy(ValidationError):
    kind = "InvalidAccuracy"


class InvalidCalibrationSamples(ValidationError):
    kind = "InvalidCalibrationSamples"


class InvalidProfile(ValidationError, ValueError):
    kind = "InvalidProfile"


class InvalidNumThreads(ValidationError):
    kind = "InvalidNumThreads"


class InvalidTarget(ValidationError, ValueError):
    kind = "InvalidTarget"


class UnknownKey(ConfigError, AttributeError):
    """A key that is not a configuration parameter (YAML, constructor, attribute, override)."""
    kind = "UnknownKey"


class ParseError(ConfigError, ValueError):
    """A value of the wrong type or syntax (YAML, constructor, attribute, override)."""
    kind = "ParseError"


class EnvError(ConfigError, ValueError):
    """A malformed ARROW_QUANT_* environment variable; ``var`` names it."""
    kind = "EnvError"


class ConfigFileError(ConfigError, OSError):
    """The configuration file cannot be read."""
    kind = ""


VALIDATION_KINDS = {c.kind: c for c in (InvalidBitWidth, InvalidModality, InvalidTimeGroups, InvalidGroupSize,
                                        InvalidAccuracy, InvalidCalibrationSamples, InvalidProfile,
                                        InvalidNumThreads, InvalidTarget)}
KINDS = dict(VALIDATION_KINDS, UnknownKey=UnknownKey, ParseError=ParseError, EnvError=EnvError)

_combined: dict = {}


def combine(primary: type, secondary: type) -> type:
    """A class that is both primary (its name and kind) and secondary."""
    if issubclass(primary, secondary):
        return primary
    key = (primary, secondary)
    if key not in _combined:
        _combined[key] = type(primary.__name__, (primary, secondary),
                              {"kind": primary.kind, "__module__": __name__,
                               "__qualname__": primary.__name__})
    return _combined[key]


# ---- models, outputs, the server binary --------------------------------------------------------

class ModelFormatError(QuantError, ValueError):
    """The model directory or a safetensors file is malformed or unsupported."""
    kind = "ModelFormatError"


class OutputExistsError(QuantError, FileExistsError):
    """The output directory exists and is not empty (pass overwrite=True)."""
    kind = "OutputExistsError"


class NotOursError(OutputExistsError):
    """overwrite=True would replace a directory ArrowQuant did not create (pass force=True as well)."""
    kind = "NotOursError"


class PathConflictError(QuantError, ValueError):
    """The output is, contains or lies inside an input of the same call: ArrowQuant never writes where it
    reads."""
    kind = "PathConflictError"


class BinaryNotFound(QuantError, FileNotFoundError):
    """No arrowquant binary to run the embedded server."""
    kind = "BinaryNotFound"


class ServerStartError(QuantError, RuntimeError):
    """The embedded server did not start."""
    kind = "ServerStartError"


# ---- Flight errors (gRPC status codes) ---------------------------------------------------------

class ServerError(QuantError):
    """A Flight call failed; ``code`` is the gRPC status code name, the message is the server's."""
    kind = "ServerError"
    code = "Unknown"


class InvalidArgument(ServerError, ValueError):
    code = kind = "InvalidArgument"


class NotFound(ServerError, KeyError):
    code = kind = "NotFound"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class AlreadyExists(ServerError, FileExistsError):
    code = kind = "AlreadyExists"


class Unauthenticated(ServerError, PermissionError):
    code = kind = "Unauthenticated"


class PermissionDenied(ServerError, PermissionError):
    code = kind = "PermissionDenied"


class ResourceExhausted(ServerError):
    code = kind = "ResourceExhausted"


class FailedPrecondition(ServerError):
    code = kind = "FailedPrecondition"


class Unavailable(ServerError, ConnectionError):
    code = kind = "Unavailable"


class Cancelled(ServerError):
    code = kind = "Cancelled"


class DeadlineExceeded(ServerError, TimeoutError):
    code = kind = "DeadlineExceeded"


class Unimplemented(ServerError, NotImplementedError):
    code = kind = "Unimplemented"


class Internal(ServerError):
    code = kind = "Internal"


SERVER_CODES = {c.code: c for c in (InvalidArgument, NotFound, AlreadyExists, Unauthenticated, PermissionDenied,
                                    ResourceExhausted, FailedPrecondition, Unavailable, Cancelled,
                                    DeadlineExceeded, Unimplemented, Internal)}

__all__ = [n for n, v in list(globals().items()) if isinstance(v, type) and issubclass(v, QuantError)]
