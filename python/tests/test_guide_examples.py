"""Every Python example of the configuration guide, run exactly as written.

The snippets are read from the guide itself (python/tests/fixtures/configuration-guide.md, kept equal to
shared/seed/configuration-guide.md when that is reachable) and executed unchanged in a scratch directory
where ``dream-7b/`` is a link to the generated tiny model and ``config.yaml`` / ``custom_config.yaml``
are the files the guide tells the reader to create. Then the results are checked against the files on disk.
"""
import contextlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import arrow_quant_v2
from arrow_quant_v2 import DiffusionQuantConfig, QuantError, dequantize, load_quantized

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUIDE = pathlib.Path(__file__).resolve().parent / "fixtures" / "configuration-guide.md"
GUIDE_TEXT = GUIDE.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", GUIDE_TEXT, re.S)
PYTHON = [b for lang, b in BLOCKS if lang == "python"]
RESULT_KEYS = ["model_size_mb", "cosine_similarity", "compression_ratio", "fallback_occurred", "actual_bit_width",
               "fallback_reason"]


def block(*markers, lang="python"):
    found = [b for lg, b in BLOCKS if lg == lang and all(m in b for m in markers)]
    assert len(found) == 1, (markers, len(found))
    return found[0]


def yaml_block(first_line):
    return block(first_line, lang="yaml")


# Each Python block of the guide, found by text it contains.
SNIPPETS = {
    "quick start: profiles": ("DiffusionQuantConfig.from_profile(DeploymentProfile.Edge)", "# Cloud server"),
    "quick start: yaml": ('from_yaml("config.yaml")', "config.validate()  # Validate configuration"),
    "environment": ("# Load base config from YAML", "# Apply environment variable overrides"),
    "validation: bit width": ("config.bit_width = 3  # Error",),
    "validation: time groups": ("config.num_time_groups = 0",),
    "validation: group size": ("config.group_size = 100",),
    "validation: accuracy": ("config.min_accuracy = 1.5",),
    "validation: automatic": ("# Validation on load", "# Manual validation"),
    "example 1": ("# Create edge configuration",),
    "example 2": ('from_yaml("custom_config.yaml")',),
    "example 3": ("import psutil",),
    "example 4": ("models = [", "for model in models:"),
    "example 5": ("# Check if fallback occurred",),
}


def snippet(key):
    return block(*SNIPPETS[key])


def test_guide_copy_is_current():
    for cand in (ROOT.parent / "shared" / "seed" / "configuration-guide.md",
                 ROOT.parent.parent / "shared" / "seed" / "configuration-guide.md"):
        if cand.exists():
            assert cand.read_text(encoding="utf-8") == GUIDE_TEXT, f"update {GUIDE} from {cand}"
            return
    pytest.skip("shared/seed/configuration-guide.md is not reachable from this checkout")


@pytest.fixture
def guide_dir(tmp_path, tiny_model, monkeypatch):
    """A scratch directory laid out as the guide's reader has it."""
    (tmp_path / "dream-7b").symlink_to(tiny_model, target_is_directory=True)
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "config.yaml")   # cp config.example.yaml config.yaml
    (tmp_path / "custom_config.yaml").write_text(yaml_block("# custom_config.yaml"))
    (tmp_path / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    for v in arrow_quant_v2.ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(code, ns=None):
    """exec a snippet; returns (namespace, stdout)."""
    ns = {} if ns is None else ns
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<configuration-guide.md>", "exec"), ns)
    return ns, out.getvalue()


def check_result(result, out_dir, source_bytes):
    """The result's keys are all there, sane, and agree with the files on disk."""
    for k in RESULT_KEYS:
        assert k in result, k
    art = pathlib.Path(out_dir) / "model.arrow"
    size = art.stat().st_size
    assert result["quantized_path"] == str(art.resolve())
    assert result["model_size_mb"] == pytest.approx(size / 2**20, rel=1e-12)
    assert result["compression_ratio"] == pytest.approx(source_bytes / size, rel=1e-12)
    assert 0.5 < result["cosine_similarity"] <= 1.0
    assert result["actual_bit_width"] in (2, 4, 8, 16)
    assert isinstance(result["fallback_occurred"], bool)
    assert (result["fallback_reason"] is None) != result["fallback_occurred"]
    report = json.loads((pathlib.Path(out_dir) / "report.json").read_text())
    assert report["model_size_mb"] == result["model_size_mb"] and report["layers"] == result["layers"]
    for f in ("config.json", "tokenizer_config.json", "generation_config.json"):
        assert (pathlib.Path(out_dir) / f).exists(), f
    table = load_quantized(out_dir)
    assert table.num_rows == sum(1 for _ in result["layers"]) or table.num_rows >= len(result["layers"])
    assert {r["name"] for r in result["layers"]} == set(table.column("name").to_pylist())
    return report


@pytest.fixture(scope="module")
def source_bytes(tiny_model):
    return (tiny_model / "model.safetensors").stat().st_size - 8 - int.from_bytes(
        (tiny_model / "model.safetensors").read_bytes()[:8], "little")


def test_quick_start_profiles(guide_dir, source_bytes):
    ns, _ = run(snippet("quick start: profiles"))
    check_result(ns["result"], "dream-7b-quantized", source_bytes)
    # The last profile assigned wins: cloud, INT8.
    assert ns["result"]["config"] == ns["config"].to_dict() and ns["result"]["bit_width"] == 8
    assert ns["result"]["actual_bit_width"] == 8 and not ns["result"]["fallback_occurred"]
    assert ns["result"]["cosine_similarity"] > 0.999


def test_quick_start_yaml(guide_dir):
    ns, _ = run(snippet("quick start: yaml"))
    assert ns["config"] == DiffusionQuantConfig.from_profile("local")


def test_environment_snippet(guide_dir, monkeypatch):
    # export ARROW_QUANT_BIT_WIDTH=2 ... as in the guide's bash block
    exports = dict(re.findall(r"export (ARROW_QUANT_\w+)=(\S+)", block("export ARROW_QUANT_BIT_WIDTH", lang="bash")))
    assert len(exports) == 4
    for k, v in exports.items():
        monkeypatch.setenv(k, v)
    ns, _ = run(snippet("environment"))
    c = ns["config"]
    assert (c.bit_width, c.num_time_groups, c.min_accuracy, c.enable_streaming) == (2, 5, 0.70, True)
    assert c.group_size == 128  # from config.yaml
    # A malformed value is an error naming the variable, never ignored.
    monkeypatch.setenv("ARROW_QUANT_MIN_ACCURACY", "0,70")
    with pytest.raises(QuantError, match='ARROW_QUANT_MIN_ACCURACY="0,70"'):
        run(snippet("environment"))


def test_environment_script(guide_dir, source_bytes):
    bash = block("export ARROW_QUANT_BIT_WIDTH", lang="bash")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"),
               **dict(re.findall(r"export (ARROW_QUANT_\w+)=(\S+)", bash)))
    cmd = re.search(r"python (scripts/quantize_diffusion\.py.*?--config config\.yaml)", bash, re.S).group(1)
    args = cmd.replace("\\\n", " ").split()
    res = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Model size:" in res.stdout and "Accuracy:" in res.stdout and "Compression:" in res.stdout
    report = json.loads((guide_dir / "dream-7b-int2" / "report.json").read_text())
    assert report["config"]["bit_width"] == 2 and report["config"]["num_time_groups"] == 5
    assert report["config"]["min_accuracy"] == 0.70 and report["config"]["enable_streaming"] is True
    assert f"Model size: {report['model_size_mb']:.1f}MB" in res.stdout
    # A second run refuses the non-empty output; --overwrite replaces it.
    again = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "not empty" in again.stderr
    again = subprocess.run([sys.executable, *args, "--overwrite"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    # A malformed variable fails with status 2 and names it.
    bad = subprocess.run([sys.executable, *args], env=dict(env, ARROW_QUANT_FAIL_FAST="maybe"), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "ARROW_QUANT_FAIL_FAST" in bad.stderr


def test_docker_example(guide_dir):
    docker = block("FROM python:3.10-slim", lang="dockerfile")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), **dict(re.findall(r"ENV (ARROW_QUANT_\w+)=(\S+)", docker)))
    cmd = json.loads(re.search(r"CMD (\[.*\])", docker).group(1))
    assert cmd == ["python", "scripts/quantize_diffusion.py"]
    res = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "ARROW_QUANT_MODEL" in res.stderr and "usage:" in res.stderr
    env.update(ARROW_QUANT_MODEL="dream-7b/", ARROW_QUANT_OUTPUT="dream-7b-docker/")
    res = subprocess.run([sys.executable, *cmd[1:]], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads((guide_dir / "dream-7b-docker" / "report.json").read_text())
    assert report["config"] == DiffusionQuantConfig.from_profile("edge").to_dict()


@pytest.mark.parametrize("key, attr, value, message", [
    ("validation: bit width", "bit_width", 3, "InvalidBitWidth(3)"),
    ("validation: time groups", "num_time_groups", 0, "InvalidTimeGroups(0)"),
    ("validation: time groups", "num_time_groups", 150, "InvalidTimeGroups(150)"),
    ("validation: group size", "group_size", 100, "InvalidGroupSize(100)"),
    ("validation: accuracy", "min_accuracy", 1.5, "InvalidAccuracy(1.5)"),
    ("validation: accuracy", "min_accuracy", -0.1, "InvalidAccuracy(-0.1)"),
])
def test_validation_rules(key, attr, value, message):
    code = snippet(key)
    # The snippet runs as written on a configuration ...
    ns, _ = run(code, {"config": DiffusionQuantConfig.default()})
    ns["config"].validate()  # ... ending on its valid value
    # ... and each line marked "# Error: X" does raise X on validate().
    errors = re.findall(r"^config\.(\w+) = (\S+)\s+# Error: (\w+\(.*?\))", code, re.M)
    assert (attr, repr(value), message) in [(a, repr(eval(v)), m) for a, v, m in errors]
    c = DiffusionQuantConfig.default()
    setattr(c, attr, value)
    with pytest.raises(QuantError) as e:
        c.validate()
    assert str(e.value).startswith(message + ": ") and type(e.value).__name__ == message.split("(")[0]


def test_automatic_validation(guide_dir):
    code = snippet("validation: automatic")
    ns = {"DiffusionQuantConfig": DiffusionQuantConfig, "QuantError": QuantError}
    _, out = run(code, dict(ns))
    assert out == "Validation failed: InvalidBitWidth(3): bit_width must be 2, 4 or 8\n"
    (guide_dir / "config.yaml").write_text("bit_width: 3\n")
    _, out = run(code, dict(ns))
    # the guide's message first, then where the value was set
    assert out.splitlines()[0] == "Configuration error: InvalidBitWidth(3): bit_width must be 2, 4 or 8 (set by config.yaml:1)"
    (guide_dir / "config.yaml").write_text("bitwidth: 4\n")
    _, out = run(code, dict(ns))
    assert out.startswith('Configuration error: config.yaml: line 1: unknown key "bitwidth" (valid keys: bit_width, ')


def test_example_1_edge(guide_dir, source_bytes):
    ns, out = run(snippet("example 1"))
    r = ns["result"]
    check_result(r, "dream-7b-edge", source_bytes)
    assert r["config"]["deployment_profile"] == "edge" and r["config"]["min_accuracy"] == 0.70
    assert r["config"]["calibration_samples"] == 64 and r["bit_width"] == 2
    assert out == (f"Model size: {r['model_size_mb']:.1f}MB\nAccuracy: {r['cosine_similarity']:.3f}\n"
                   f"Compression: {r['compression_ratio']:.1f}x\n")
    # INT2 g256 plus fallbacks: well under half the BF16 size.
    assert r["compression_ratio"] > 3


def test_example_2_custom_yaml(guide_dir, source_bytes):
    ns, _ = run(snippet("example 2"))
    r = ns["result"]
    check_result(r, "dream-7b-custom", source_bytes)
    assert r["config"] == {"bit_width": 4, "modality": "text", "num_time_groups": 15, "enable_time_aware": True,
                           "group_size": 128, "enable_spatial": True, "min_accuracy": 0.80,
                           "calibration_samples": 256, "deployment_profile": "local", "fail_fast": False,
                           "num_threads": 8, "enable_streaming": False, "target": None}
    assert r["modality"] == "text"


def test_example_3_dynamic(guide_dir, source_bytes):
    pytest.importorskip("psutil")
    code = snippet("example 3")
    # The guide's Example 3 imports DiffusionQuantConfig and DeploymentProfile but also uses ArrowQuantV2,
    # which only the Quick start imported: run it where the reader has run the Quick start.
    assert "ArrowQuantV2" not in code.split("\n\n")[0] and "ArrowQuantV2(" in code
    ns, out = run(code, {"ArrowQuantV2": arrow_quant_v2.ArrowQuantV2})
    check_result(ns["result"], "dream-7b-quantized", source_bytes)
    assert ns["result"]["config"]["deployment_profile"] == ns["profile"].value
    assert out.startswith("Using ")


def test_example_4_batch(guide_dir, source_bytes):
    ns, out = run(snippet("example 4"))
    sizes = {}
    for m in ns["models"]:
        d = guide_dir / "models" / m["name"]
        rep = json.loads((d / "report.json").read_text())
        assert rep["config"]["bit_width"] == m["bit_width"]
        assert rep["config"]["deployment_profile"] == m["profile"]
        check_result(rep, d, source_bytes)
        sizes[m["bit_width"]] = rep["model_size_mb"]
        assert f"Quantizing {m['name']}..." in out and f"  Size: {rep['model_size_mb']:.1f}MB" in out
    assert sizes[2] < sizes[4] < sizes[8]


def test_example_5_fallback(guide_dir, source_bytes, tiny_model):
    ns, out = run(snippet("example 5"))
    r = ns["result"]
    check_result(r, "dream-7b-fallback-test", source_bytes)
    fell = [layer for layer in r["layers"] if layer["bit_width"] in (4, 8, 16) and not layer.get("policy")]
    # Whether INT2 holds at 0.75 depends on the quantization method; the
    # report must be consistent either way.
    if r["fallback_occurred"]:
        assert r["actual_bit_width"] in (4, 8, 16)
        assert "fell back" in r["fallback_reason"] and "min_accuracy 0.75" in r["fallback_reason"]
        assert out.startswith(f"Fallback to INT{r['actual_bit_width']}\nReason: {r['fallback_reason']}\n")
        assert fell and all(layer["fallback_reason"] for layer in fell)
    else:
        assert r["actual_bit_width"] == 2 and r["fallback_reason"] is None and not fell
        assert out.startswith("INT2 quantization succeeded!\n")
    # Every tensor that stayed at INT2 meets the threshold.
    assert all(layer["cosine_similarity"] >= 0.75 for layer in r["layers"] if layer["bit_width"] == 2)
    # The artifact really holds INT2 codes for those: n/4 bytes per row.
    t = load_quantized("dream-7b-fallback-test")
    for row in t.filter(t.column("bit_width").to_numpy() == 2).to_pylist():
        assert len(row["codes"]) == (row["chunk_elems"] + 3) // 4
    w = dequantize("dream-7b-fallback-test")
    assert set(w) == {layer["name"] for layer in r["layers"]}
    assert all(v.dtype == np.float32 for v in w.values())


def test_every_python_block_is_run():
    """SNIPPETS names every Python block of the guide once (and each test above runs its block)."""
    assert len(PYTHON) == 13
    assert sorted(PYTHON.index(block(*m)) for m in SNIPPETS.values()) == list(range(len(PYTHON)))
