#!/usr/bin/env python3
"""Quantize a diffusion model with ArrowQuant, as in the configuration guide:

    python scripts/quantize_diffusion.py --model dream-7b/ --output dream-7b-int2/ --config config.yaml

The configuration is resolved like `arrowquant quantize --config FILE`: the presets of the base profile
(ARROW_QUANT_DEPLOYMENT_PROFILE, else the file's deployment_profile, else local), then the YAML file's
keys, then the ARROW_QUANT_* environment variables; then it is validated. Without --model/--output (the
guide's Docker example runs the script with no arguments) the model and output directories come from
ARROW_QUANT_MODEL and ARROW_QUANT_OUTPUT.

The quantization runs in an embedded `arrowquant serve` (binary from ARROW_QUANT_BIN, PATH or this
checkout's bin/arrowquant), or on the server named by --server / ARROW_QUANT_SERVER.

Exit status: 0 ok, 2 invalid usage or configuration, 1 any other failure.
"""
import argparse
import json
import os
import pathlib
import sys

try:
    import arrow_quant_v2  # noqa: F401  (installed?)
except ImportError:  # running from a checkout without `pip install ./python`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))

from arrow_quant_v2 import ArrowQuantV2, DiffusionQuantConfig, QuantError  # noqa: E402
from arrow_quant_v2.errors import ConfigError  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="quantize_diffusion.py",
        description="Quantize a Hugging Face diffusion model directory (safetensors) to INT2/INT4/INT8.",
        epilog="Environment: ARROW_QUANT_MODEL and ARROW_QUANT_OUTPUT stand in for --model and --output; "
               "ARROW_QUANT_BIT_WIDTH, _NUM_TIME_GROUPS, _GROUP_SIZE, _MIN_ACCURACY, _CALIBRATION_SAMPLES, "
               "_FAIL_FAST, _NUM_THREADS, _ENABLE_STREAMING, _DEPLOYMENT_PROFILE, _MODALITY override the "
               "configuration; ARROW_QUANT_SERVER names a running server.")
    p.add_argument("--model", default=os.environ.get("ARROW_QUANT_MODEL") or None,
                   help="model directory (default: $ARROW_QUANT_MODEL)")
    p.add_argument("--output", default=os.environ.get("ARROW_QUANT_OUTPUT") or None,
                   help="output directory (default: $ARROW_QUANT_OUTPUT)")
    p.add_argument("--config", default=None, help="YAML configuration file (see config.example.yaml)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--server", default=None, help="use a running server, grpc://HOST:PORT (default: embedded)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = p.parse_args(argv)
    if not args.model or not args.output:
        p.print_usage(sys.stderr)
        missing = " and ".join(f"--{n} (or ARROW_QUANT_{n.upper()})" for n in ("model", "output")
                               if not getattr(args, n))
        print(f"{p.prog}: error: missing {missing}", file=sys.stderr)
        sys.exit(2)
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        config = DiffusionQuantConfig.resolve(yaml_path=args.config, env=os.environ)
    except QuantError as e:
        print(f"Configuration error: {e}", file=sys.stderr)
        return 2
    print("Configuration: " + json.dumps(config.to_dict()), file=sys.stderr)

    show = sys.stderr.isatty()

    def progress(p):
        if show and p["phase"] in ("upload", "download"):
            print(f"\r{p['phase']}: {float(p):6.1%}", end="", file=sys.stderr, flush=True)

    try:
        with ArrowQuantV2(mode="diffusion", server=args.server) as quantizer:
            result = quantizer.quantize_diffusion_model(model_path=args.model, output_path=args.output,
                                                        config=config, progress_callback=progress,
                                                        overwrite=args.overwrite)
    except ConfigError as e:
        print(f"\nConfiguration error: {e}", file=sys.stderr)
        return 2
    except QuantError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    if show:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Output: {os.path.dirname(result['quantized_path'])}")
    print(f"Model size: {result['model_size_mb']:.1f}MB")
    print(f"Accuracy: {result['cosine_similarity']:.3f}")
    print(f"Compression: {result['compression_ratio']:.1f}x ({result.get('compression_basis', '')})")
    if result.get("fallback_occurred"):
        print(f"Fallback to INT{result['actual_bit_width']}: {result['fallback_reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
