"""Runs one case of config/testdata/vectors.json with the Python implementation (the Go twin is
config/vectors_test.go). A case is {"name", "op"?, "base"?, "config"?, "env"?, "yaml"?, "profile"?,
"overrides"?, "expect"}:

- op "apply" (the default without "yaml"): presets of "base" (default local; an unknown name keeps
  local presets and fails validation), then "config" as Go's ApplyMap / Python's update(), then "env" as
  ApplyEnv / apply_env_overrides(), then Validate / validate().
- op "resolve" (the default with "yaml"): Go's Resolve / Python's DiffusionQuantConfig.resolve() with the
  YAML text written to a temporary file, "env" as the environment, "profile" and "overrides".

"expect" is {"ok": true, "config": {...every key...}} or {"ok": false, "kind": K, "message": M} with
"{yaml}" standing for the file's path; "message_prefix" replaces "message" where the YAML parsers'
own syntax-error texts differ.
"""
import json
import os
import pathlib

from arrow_quant_v2 import DiffusionQuantConfig, QuantError

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "config" / "testdata" / "vectors.json"


def load_vectors():
    with open(VECTORS, encoding="utf-8") as f:
        return json.load(f)


def run_case(case, tmpdir):
    op = case.get("op") or ("resolve" if "yaml" in case else "apply")
    yaml_path = None
    try:
        if op == "resolve":
            if "yaml" in case:
                yaml_path = os.path.join(str(tmpdir), "config.yaml")
                with open(yaml_path, "w", encoding="utf-8", newline="") as f:
                    f.write(case["yaml"])
            cfg = DiffusionQuantConfig.resolve(profile=case.get("profile"), yaml_path=yaml_path,
                                               env=case.get("env"), overrides=case.get("overrides"))
        elif op == "apply":
            cfg = DiffusionQuantConfig._unvalidated_profile(case.get("base", "local"))
            if "config" in case:
                cfg.update(case["config"])
            if "env" in case:
                cfg.apply_env_overrides(case["env"])
            cfg.validate()
        else:
            raise ValueError(f"unknown op {op!r}")
    except QuantError as e:
        msg = str(e)
        if yaml_path:
            msg = msg.replace(yaml_path, "{yaml}")
        return {"ok": False, "kind": e.kind, "message": msg, "exception": e}
    return {"ok": True, "config": cfg.to_dict()}


def check(case, got):
    """Assert got (from run_case) meets case["expect"]."""
    exp = case["expect"]
    assert got["ok"] == exp["ok"], f"{case['name']}: got {got}"
    if exp["ok"]:
        assert got["config"] == exp["config"], case["name"]
        return
    assert got["kind"] == exp["kind"], f"{case['name']}: {got['message']}"
    if "message" in exp:
        assert got["message"] == exp["message"], case["name"]
    else:
        assert got["message"].startswith(exp["message_prefix"]), (case["name"], got["message"])
