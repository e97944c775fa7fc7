import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def arrowquant_bin():
    """The arrowquant binary: $ARROW_QUANT_BIN, else bin/arrowquant (built by `make build`)."""
    path = os.environ.get("ARROW_QUANT_BIN") or str(ROOT / "bin" / "arrowquant")
    if not os.path.exists(path):
        subprocess.run(["go", "build", "-o", path, "./cmd/arrowquant"], cwd=ROOT, check=True)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, arrowquant_bin):
    out = tmp_path_factory.mktemp("models") / "tiny"
    subprocess.run([arrowquant_bin, "gen-model", "--preset", "tiny", "--out", str(out), "--seed", "3"], check=True)
    return out
