"""The committed digits DiT (testdata/dit-digits, trained by diffusion/train.py): numpy forward vs the JAX
reference, hooks, sample quality, and calibration capture read by the real binary. numpy + scikit-learn only."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "testdata" / "dit-digits"
sys.path.insert(0, str(ROOT))

from diffusion import model as M  # noqa: E402
from diffusion.calibrate import capture  # noqa: E402

# Measured on the committed checkpoint (64 DDIM samples, 20 steps, seed 0): confidence 0.718, Fréchet
# distance 1.61; N(0, 1) noise images: about 0.4 and 14. Bounds leave margin on both sides.
MIN_CONFIDENCE = 0.62
MAX_FRECHET = 4.0


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """Small matrices: BLAS threads only add contention on a shared 2-core machine."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def dit():
    return M.DiT.load(MODEL)


@pytest.fixture(scope="module")
def clf():
    pytest.importorskip("sklearn")
    from diffusion.evaluate import DigitsClassifier
    return DigitsClassifier()


def test_numpy_forward_matches_jax(dit):
    ref = np.load(MODEL / "jax_reference.npz")
    eps = dit(ref["x"], ref["t"])
    assert eps.dtype == np.float32 and eps.shape == ref["eps"].shape
    assert np.abs(ref["eps"]).max() > 0.5  # a trained model, not the zero-initialised output layer
    np.testing.assert_allclose(eps, ref["eps"], rtol=0, atol=1e-5)


def test_hook_sees_every_linear_input_and_can_replace_it(dit):
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    t = np.array([10, 500, 990])
    seen = []

    def record(layer, h, tt):
        seen.append((layer, h.shape))
        np.testing.assert_array_equal(tt, t)

    base = dit(x, t, hook=record)
    shapes = M.layer_shapes(dit.cfg)
    assert [n for n, _ in seen] == M.linear_layers(dit.cfg)
    for n, s in seen:
        assert s[-1] == shapes[n][1] and s[0] == 3
    assert dit(x, t, hook=lambda n, h, tt: h.copy()).tolist() == base.tolist()
    # Replacing one layer's input (a crude INT4 fake-quant) changes the output, but not by much.
    def fq(n, h, tt):
        if n != "transformer_blocks.2.ff.net.2":
            return None
        s = np.abs(h).max() / 7
        return np.round(h / s).clip(-8, 7) * s
    mod = dit(x, t, hook=fq)
    assert 0 < np.abs(mod - base).max() < 0.5


def test_safetensors_round_trip(tmp_path, dit):
    M.save_safetensors(tmp_path / "m.safetensors", dit.params)
    back = M.load_safetensors(tmp_path / "m.safetensors")
    assert set(back) == set(dit.params)
    for k, v in dit.params.items():
        np.testing.assert_array_equal(back[k], v)
    assert dit.params["transformer_blocks.0.ff.net.0.proj.weight"].shape == (512, 128)  # [out, in]


def test_frechet_distance():
    from diffusion.evaluate import frechet_distance
    a = np.random.default_rng(1).standard_normal((4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    # N(0, I) vs N(m, 4I): |m|² + 3·(1 + 4 - 2·2)
    b = 2 * np.random.default_rng(2).standard_normal((4000, 3)) + np.array([1.0, 0, 0])
    assert frechet_distance(a, b) == pytest.approx(1 + 3, rel=0.1)


def test_samples_are_digits(dit, clf):
    from diffusion.evaluate import sample_quality
    q = sample_quality(clf, M.ddim_sample(dit, 64, steps=20, seed=0))
    noise = sample_quality(clf, np.clip(np.random.default_rng(0).standard_normal((64, 1, 8, 8)), -1, 1))
    assert clf.test_accuracy > 0.95
    assert q["confidence"] > MIN_CONFIDENCE and q["frechet"] < MAX_FRECHET, q
    assert noise["confidence"] < MIN_CONFIDENCE - 0.1 and noise["frechet"] > 2 * MAX_FRECHET, noise
    assert sum(s > 0 for s in q["class_shares"]) >= 8  # no collapse onto a few digits


def test_denoiser_sqnr(dit, clf):
    from diffusion.evaluate import denoiser_sqnr
    w8 = {}
    for k, v in dit.params.items():  # round-to-nearest INT8 per output row
        s = np.abs(v).max(-1, keepdims=True) / 127 if v.ndim == 2 else None
        w8[k] = v if s is None else np.round(v / np.where(s > 0, s, 1)) * s
    ts = [0, 250, 999]
    same = denoiser_sqnr(dit, dit, clf.test_x[:32], ts)
    q8 = denoiser_sqnr(dit, M.DiT(dit.cfg, w8), clf.test_x[:32], ts)
    assert all(v > 250 for v in same.values())
    # Measured: 24.0, 46.6, 53.9 dB. The last steps (small t) are the most sensitive.
    assert 18 < q8[0] < q8[250] and 35 < q8[250] < 60 and 40 < q8[999] < 70, q8


def test_calibration_capture_accepted_by_binary(tmp_path, dit, clf, arrowquant_bin):
    pq = pytest.importorskip("pyarrow.parquet")
    tab = capture(dit, seeds=4, samples_per_call=2, steps=20)
    layers = M.linear_layers(dit.cfg)
    assert tab.num_rows == len(layers) * 20 * 2
    assert str(tab.schema.field("activation").type) == "list<item: float>"
    assert sorted(set(tab.column("timestep").to_pylist())) == sorted(float(t) for t in dit.schedule.ddim_timesteps(20))
    path = tmp_path / "calib.parquet"
    pq.write_table(tab, path)
    out = subprocess.run([arrowquant_bin, "quantize", "--model", str(MODEL), "--output", str(tmp_path / "q"),
                          "--calibration", str(path), "--num-time-groups", "5", "--json"],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["modality"] == "image"
    tg = r["time_groups"]
    assert tg["calibration"]["layers_matched"] == len(layers) == tg["calibration"]["layers"]
    assert set(tg["activation_params"]) == set(layers)
    for name, groups in tg["activation_params"].items():
        assert len(groups) == 5 and all(g["scale"] > 0 for g in groups), name
    protected = {p[:-len(".weight")] for p in tg["protected_layers"]}
    assert protected == {n for n in layers if "time_embed" in n or "adaLN" in n}

    # The quantized artifact (INT4 lsq, timestep-conditioned layers at INT8), dequantized by the Python
    # package, loads into the numpy forward: the harness the quantized evaluation runs on.
    from arrow_quant_v2.artifact import dequantize
    from diffusion.evaluate import denoiser_sqnr
    deq = dequantize(tmp_path / "q")
    assert set(deq) == set(dit.params)
    sq = denoiser_sqnr(dit, M.DiT(dit.cfg, deq), clf.test_x[:32], [0, 500, 999])
    # Measured: 1.4, 26.4, 30.9 dB: W4 weights hurt most at t = 0, where the predicted noise is tiny.
    assert 0.5 < sq[0] < 5 and 20 < sq[500] < 35 and 24 < sq[999] < 40, sq


def test_calibration_bad_input(tmp_path, dit, arrowquant_bin, start_server):
    """Calibration data of another model, timesteps outside the model's range, fewer rows than
    calibration_samples: refused with the layer and row named (CLI exit 2, Flight InvalidArgument, nothing
    stored), or a warning in the result."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    tab = capture(dit, seeds=2, samples_per_call=1, steps=10)
    layers = M.linear_layers(dit.cfg)
    victim = layers[1]

    def variant(name, fn):
        rows = tab.to_pylist()
        for r in rows:
            fn(r)
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=tab.schema), path)
        return str(path)

    def cut(r):  # another model: this layer has half the input channels
        if r["layer"] == victim:
            r["activation"] = r["activation"][: len(r["activation"]) // 2]

    def late(r):  # timesteps of a 5000-step model
        r["timestep"] = r["timestep"] + 4500

    other, beyond = variant("other", cut), variant("beyond", late)

    def quantize(calibration, *extra):
        return subprocess.run([arrowquant_bin, "quantize", "--model", str(MODEL), "--output", str(tmp_path / "q"),
                               "--calibration", calibration, "--json", *extra], capture_output=True, text=True)

    out = quantize(other)
    assert out.returncode == 2, out.stderr
    assert f'layer "{victim}": activations of' in out.stderr and "does not match the model" in out.stderr, out.stderr
    assert not (tmp_path / "q").exists()
    out = quantize(beyond)
    assert out.returncode == 2, out.stderr
    assert "outside the model's range [0, 1000] (num_train_timesteps 1000 in config.json)" in out.stderr, out.stderr
    assert not (tmp_path / "q").exists()

    good = variant("good", lambda r: None)
    out = quantize(good, "--calibration-samples", "500")
    assert out.returncode == 0, out.stderr
    warnings = json.loads(out.stdout)["warnings"]
    assert any(f"{len(layers)} of {len(layers)} layers have fewer rows than calibration_samples 500 (as few as" in w
               for w in warnings), warnings

    # The same refusals over Flight (the server's message), and the name stays free.
    fl = pytest.importorskip("pyarrow.flight")
    with start_server() as srv:
        for calibration, needle in ((other, f'layer "{victim}": activations of'), (beyond, "outside the model's range")):
            out = subprocess.run([arrowquant_bin, "push", "--server", srv.location, "--model", str(MODEL), "--name", "dit",
                                  "--calibration", calibration], capture_output=True, text=True)
            assert out.returncode == 1 and "server: calibration" in out.stderr and needle in out.stderr, out.stderr
            assert list(fl.FlightClient(srv.location).list_flights()) == []
        out = subprocess.run([arrowquant_bin, "push", "--server", srv.location, "--model", str(MODEL), "--name", "dit",
                              "--calibration", good, "--json"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
