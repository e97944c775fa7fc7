"""config/testdata/vectors.json against the Python implementation (config/vectors_test.go runs the same
file against Go): same configurations, same error kinds, same messages."""
import pytest

from arrow_quant_v2 import errors
from _vectors import check, load_vectors, run_case

VECTORS = load_vectors()


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_vector(case, tmp_path):
    got = run_case(case, tmp_path)
    check(case, got)
    if not got["ok"]:
        # The exception's class is the kind's class, also when it came from a file or a variable.
        e = got["exception"]
        assert isinstance(e, errors.QuantError)
        assert isinstance(e, errors.KINDS[case["expect"]["kind"]])
        if case.get("env") and str(e).startswith("invalid environment variable"):
            assert isinstance(e, errors.EnvError)
        if str(e).startswith("{yaml}") or ": invalid value" in str(e) or str(e).startswith("invalid value"):
            assert isinstance(e, errors.ParseError)


def test_vector_names_unique():
    names = [c["name"] for c in VECTORS]
    assert len(names) == len(set(names))
