"""The Python-specific surface of DiffusionQuantConfig (the shared rules are in test_config_vectors.py)."""
import math
import os

import pytest

from arrow_quant_v2 import (ENV_VARS, KEYS, DeploymentProfile, DiffusionQuantConfig, EnvError, InvalidAccuracy,
                            InvalidBitWidth, InvalidGroupSize, InvalidModality, InvalidProfile, InvalidTimeGroups,
                            ParseError, QuantError, UnknownKey)
from arrow_quant_v2.errors import ConfigFileError

LOCAL = dict(bit_width=4, modality=None, num_time_groups=10, enable_time_aware=True, group_size=128,
             enable_spatial=True, min_accuracy=0.85, calibration_samples=128, deployment_profile="local",
             fail_fast=False, num_threads=0, enable_streaming=False, target=None)


def test_defaults_are_the_local_profile():
    assert DiffusionQuantConfig.default().to_dict() == LOCAL
    assert DiffusionQuantConfig().to_dict() == LOCAL
    assert list(DiffusionQuantConfig().to_dict()) == KEYS
    assert DiffusionQuantConfig.from_profile(DeploymentProfile.Local) == DiffusionQuantConfig.default()


@pytest.mark.parametrize("p", list(DeploymentProfile))
def test_from_profile_enum_and_strings(p):
    a = DiffusionQuantConfig.from_profile(p)
    assert a == DiffusionQuantConfig.from_profile(p.value) == DiffusionQuantConfig.from_profile(p.value.upper())
    assert a.deployment_profile == p.value == str(p)
    assert DeploymentProfile(p.value) is p


def test_from_profile_unknown():
    with pytest.raises(InvalidProfile) as e:
        DiffusionQuantConfig.from_profile("mobile")
    assert str(e.value) == 'InvalidProfile("mobile"): deployment_profile must be edge, local or cloud'


def test_attribute_assignment_then_validate():
    config = DiffusionQuantConfig.default()
    config.bit_width = 3  # accepted: validate() checks ranges
    with pytest.raises(InvalidBitWidth) as e:
        config.validate()
    assert str(e.value) == "InvalidBitWidth(3): bit_width must be 2, 4 or 8"
    assert e.value.kind == "InvalidBitWidth" and e.value.field == "bit_width" and e.value.value == 3
    config.bit_width = 4
    assert config.validate() is config
    for attr, value, cls, msg in [("num_time_groups", 0, InvalidTimeGroups, "InvalidTimeGroups(0)"),
                                  ("num_time_groups", 150, InvalidTimeGroups, "InvalidTimeGroups(150)"),
                                  ("group_size", 100, InvalidGroupSize, "InvalidGroupSize(100)"),
                                  ("min_accuracy", 1.5, InvalidAccuracy, "InvalidAccuracy(1.5)"),
                                  ("min_accuracy", -0.1, InvalidAccuracy, "InvalidAccuracy(-0.1)"),
                                  ("min_accuracy", float("nan"), InvalidAccuracy, "InvalidAccuracy(NaN)")]:
        c = DiffusionQuantConfig.default()
        setattr(c, attr, value)
        with pytest.raises(cls) as e:
            c.validate()
        assert str(e.value).startswith(msg + ": ")


def test_assignment_is_type_checked_and_normalised():
    c = DiffusionQuantConfig.default()
    with pytest.raises(ParseError, match=r'invalid value "4" for bit_width: expected an integer, got a string'):
        c.bit_width = "4"
    with pytest.raises(ParseError, match="expected an integer, got a boolean"):
        c.bit_width = True
    with pytest.raises(ParseError, match="expected a boolean, got a number"):
        c.fail_fast = 1
    with pytest.raises(UnknownKey, match='unknown key "bitwidth"'):
        c.bitwidth = 4
    with pytest.raises(InvalidModality) as e:
        c.modality = "video"
    assert isinstance(e.value, ParseError)
    assert c == DiffusionQuantConfig.default()  # failed assignments change nothing
    c.modality = " Text "
    c.deployment_profile = DeploymentProfile.Cloud
    c.min_accuracy = 1
    c.group_size = 64.0
    assert (c.modality, c.deployment_profile, c.min_accuracy, c.group_size) == ("text", "cloud", 1.0, 64)
    assert isinstance(c.min_accuracy, float) and isinstance(c.group_size, int)
    c.modality = None
    assert c.modality is None and c.to_dict()["modality"] is None


def test_constructor_rebases_on_its_profile_like_a_yaml_file(tmp_path):
    c = DiffusionQuantConfig(deployment_profile="edge", bit_width=4)
    p = tmp_path / "c.yaml"
    p.write_text("deployment_profile: edge\nbit_width: 4\n")
    assert c == DiffusionQuantConfig.from_yaml(p)
    assert c.group_size == 256 and c.enable_streaming is True
    with pytest.raises(UnknownKey):
        DiffusionQuantConfig(bits=4)
    # update() is Go's ApplyMap: the profile field only.
    u = DiffusionQuantConfig.default().update({"deployment_profile": "edge"})
    assert u.deployment_profile == "edge" and u.bit_width == 4


def test_from_dict_round_trip():
    for p in DeploymentProfile:
        c = DiffusionQuantConfig.from_profile(p)
        c.modality = "code"
        assert DiffusionQuantConfig.from_dict(c.to_dict()) == c


def test_apply_env_overrides_reads_os_environ(monkeypatch):
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("ARROW_QUANT_BIT_WIDTH", "2")
    monkeypatch.setenv("ARROW_QUANT_FAIL_FAST", "yes")
    monkeypatch.setenv("ARROW_QUANT_MODALITY", "")
    c = DiffusionQuantConfig.default().apply_env_overrides()
    assert (c.bit_width, c.fail_fast, c.modality) == (2, True, None)
    monkeypatch.setenv("ARROW_QUANT_NUM_THREADS", "four")
    before = c.copy()
    with pytest.raises(EnvError) as e:
        c.apply_env_overrides()
    assert "ARROW_QUANT_NUM_THREADS" in str(e.value) and e.value.var == "ARROW_QUANT_NUM_THREADS"
    assert isinstance(e.value, QuantError) and isinstance(e.value, ValueError)
    assert c == before  # nothing applied
    monkeypatch.setenv("ARROW_QUANT_NUM_THREADS", "1")
    monkeypatch.setenv("ARROW_QUANT_DEPLOYMENT_PROFILE", "phone")
    with pytest.raises(InvalidProfile) as e:
        c.apply_env_overrides()
    assert isinstance(e.value, EnvError)
    assert str(e.value) == ('invalid environment variable ARROW_QUANT_DEPLOYMENT_PROFILE="phone": '
                            'InvalidProfile("phone"): deployment_profile must be edge, local or cloud')


def test_env_vars_list():
    assert ENV_VARS == ["ARROW_QUANT_BIT_WIDTH", "ARROW_QUANT_NUM_TIME_GROUPS", "ARROW_QUANT_GROUP_SIZE",
                        "ARROW_QUANT_MIN_ACCURACY", "ARROW_QUANT_CALIBRATION_SAMPLES", "ARROW_QUANT_FAIL_FAST",
                        "ARROW_QUANT_NUM_THREADS", "ARROW_QUANT_ENABLE_STREAMING", "ARROW_QUANT_DEPLOYMENT_PROFILE",
                        "ARROW_QUANT_MODALITY", "ARROW_QUANT_TARGET"]


def test_resolve_env_rebases(monkeypatch):
    env = {"ARROW_QUANT_BIT_WIDTH": "2", "ARROW_QUANT_DEPLOYMENT_PROFILE": "edge", "ARROW_QUANT_ENABLE_STREAMING": "true"}
    assert DiffusionQuantConfig.resolve(env=env) == DiffusionQuantConfig.from_profile("edge")
    # apply_env_overrides sets the profile field only (Go's ApplyEnv).
    c = DiffusionQuantConfig.default().apply_env_overrides(env)
    assert c.deployment_profile == "edge" and c.group_size == 128


def test_from_yaml_missing_and_directory(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigFileError) as e:
        DiffusionQuantConfig.from_yaml(missing)
    assert str(e.value) == f"config: open {missing}: no such file or directory"
    assert isinstance(e.value, QuantError) and isinstance(e.value, OSError)
    with pytest.raises(ConfigFileError, match="is a directory"):
        DiffusionQuantConfig.from_yaml(tmp_path)


def test_example_config_is_the_local_profile():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    c = DiffusionQuantConfig.from_yaml(os.path.join(root, "config.example.yaml"))
    assert c == DiffusionQuantConfig.from_profile("local")


def test_repr_eq_copy():
    c = DiffusionQuantConfig.default()
    d = c.copy()
    d.bit_width = 8
    assert c != d and c.bit_width == 4
    assert "bit_width=4" in repr(c)
    n1, n2 = c.copy(), c.copy()
    n1.min_accuracy = n2.min_accuracy = math.nan
    assert n1 == n2
    with pytest.raises(TypeError):
        hash(c)
