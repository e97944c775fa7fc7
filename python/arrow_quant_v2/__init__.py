"""arrow_quant_v2: the configuration guide's Python API for ArrowQuant.

Quantization runs in the Go engine behind an Arrow Flight server: ``ArrowQuantV2`` connects to one
(``server=`` or ``ARROW_QUANT_SERVER``) or starts an embedded ``arrowquant serve``; weights stream over
``pyarrow.flight`` and the quantized artifact comes back as a plain Arrow IPC file.
"""
from . import errors as _errors
from .activation import ActivationQuantizer, activation_quantizer
from .artifact import dequantize, load_quantized
from .config import ENV_VARS, KEYS, DeploymentProfile, DiffusionQuantConfig
from .errors import *  # noqa: F401,F403 - QuantError and its subclasses
from .quantizer import ArrowQuantV2, Progress, export_gguf, quantize_diffusion_model

__version__ = "0.1.0"

__all__ = ["ArrowQuantV2", "DiffusionQuantConfig", "DeploymentProfile", "Progress", "quantize_diffusion_model", "export_gguf", "activation_quantizer", "ActivationQuantizer",
           "load_quantized", "dequantize", "KEYS", "ENV_VARS", *_errors.__all__]
