"""GGUF through the server and the Python package: a DoGet {"format": "gguf"} stream, `arrowquant pull --format
gguf` and arrow_quant_v2.export_gguf give the same file as a local `arrowquant export`, which gguf-py reads."""
import json
import subprocess

import pyarrow.flight as fl
import pytest

gguf = pytest.importorskip("gguf")

import arrow_quant_v2 as aq  # noqa: E402


@pytest.fixture(scope="module")
def llama_model(tmp_path_factory, arrowquant_bin):
    out = tmp_path_factory.mktemp("gguf-flight") / "tl"
    subprocess.run([arrowquant_bin, "gen-model", "--preset", "tiny-llama", "--output", str(out), "--seed", "5"],
                   check=True, capture_output=True)
    return out


def tensors(path):
    r = gguf.GGUFReader(str(path))
    return {t.name: (int(t.tensor_type), bytes(t.data.tobytes())) for t in r.tensors}


def test_gguf_over_flight_equals_local_export(start_server, llama_model, arrowquant_bin, tmp_path):
    local_out = tmp_path / "local"
    subprocess.run([arrowquant_bin, "quantize", "--model", str(llama_model), "--output", str(local_out), "--target",
                    "gguf", "--spatial=false"], check=True, capture_output=True)
    subprocess.run([arrowquant_bin, "export", "--model", str(local_out), "--output", str(tmp_path / "local.gguf"),
                    "--exact", "--runnable"], check=True, capture_output=True)
    want = tensors(tmp_path / "local.gguf")
    with start_server() as srv:
        subprocess.run([arrowquant_bin, "push", "--server", srv.location, "--model", str(llama_model), "--name", "tl",
                        "--target", "gguf", "--spatial=false"], check=True, capture_output=True)
        # Plain pyarrow: the bytes in offset order, then the report row.
        c = fl.connect(srv.location)
        table = c.do_get(fl.Ticket(json.dumps({"model": "tl", "format": "gguf", "exact": True,
                                               "runnable": True}).encode())).read_all()
        offs, data, rep = (table.column(i).to_pylist() for i in range(3))
        blob = b"".join(d for d in data if d)
        assert offs[0] == 0 and all(o2 == o1 + len(d) for o1, o2, d in zip(offs, offs[1:], data))
        assert rep[:-1] == [None] * (len(rep) - 1) and json.loads(rep[-1])["exact_tensors"] == len(want)
        (tmp_path / "raw.gguf").write_bytes(blob)
        assert tensors(tmp_path / "raw.gguf") == want
        # The CLI and the package.
        subprocess.run([arrowquant_bin, "pull", "--server", srv.location, "--name", "tl", "--format", "gguf",
                        "--output", str(tmp_path / "pulled.gguf"), "--exact"], check=True, capture_output=True)
        assert tensors(tmp_path / "pulled.gguf") == want
        with aq.ArrowQuantV2(server=srv.location) as q:
            report = q.export_gguf("tl", tmp_path / "py.gguf", exact=True, runnable=True)
            assert report["exact_tensors"] == len(want) and (tmp_path / "py.gguf.report.json").exists()
            assert tensors(tmp_path / "py.gguf") == want
            with pytest.raises(aq.OutputExistsError):
                q.export_gguf("tl", tmp_path / "py.gguf")
            with pytest.raises(aq.NotFound):
                q.export_gguf("nosuch", tmp_path / "none.gguf")
            assert not (tmp_path / "none.gguf").exists()
            # An artifact that is not GGUF-exact: refused with exact, re-encoded without.
            subprocess.run([arrowquant_bin, "push", "--server", srv.location, "--model", str(llama_model), "--name",
                            "edge", "--profile", "edge"], check=True, capture_output=True)
            with pytest.raises(aq.FailedPrecondition, match="re-encoded"):
                q.export_gguf("edge", tmp_path / "edge.gguf", exact=True)
            assert not list(tmp_path.glob(".edge.gguf.tmp-*")) and not (tmp_path / "edge.gguf").exists()
            rep = q.export_gguf("edge", tmp_path / "edge.gguf")
            assert rep["reencoded_tensors"] > 0
    # A local output directory goes through the binary.
    report = aq.export_gguf(local_out, tmp_path / "direct.gguf", exact=True)
    assert tensors(tmp_path / "direct.gguf") == want and report["exact_tensors"] == len(want)
