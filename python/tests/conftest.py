import contextlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Test the package in this checkout, whether or not (an older) one is pip-installed.
sys.path.insert(0, str(ROOT / "python"))


@pytest.fixture(scope="session")
def arrowquant_bin():
    """The arrowquant binary: $ARROW_QUANT_BIN, else bin/arrowquant (built by `make build`)."""
    path = os.environ.get("ARROW_QUANT_BIN") or str(ROOT / "bin" / "arrowquant")
    if not os.path.exists(path):
        subprocess.run(["go", "build", "-o", path, "./cmd/arrowquant"], cwd=ROOT, check=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def _package_uses_test_binary(arrowquant_bin):
    """ArrowQuantV2's embedded server runs the binary under test; no ambient server is used."""
    old = {k: os.environ.get(k) for k in ("ARROW_QUANT_BIN", "ARROW_QUANT_SERVER")}
    os.environ["ARROW_QUANT_BIN"] = os.path.abspath(arrowquant_bin)
    os.environ.pop("ARROW_QUANT_SERVER", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, arrowquant_bin):
    out = tmp_path_factory.mktemp("models") / "tiny"
    subprocess.run([arrowquant_bin, "gen-model", "--preset", "tiny", "--out", str(out), "--seed", "3"], check=True)
    return out


_READY = re.compile(r"serving Arrow Flight on (grpc\S*://\S+)")


class Server:
    """A running `arrowquant serve` (stopped by stop())."""

    def __init__(self, binary, data_dir, args=(), env=None):
        self.data_dir = str(data_dir)
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "serve", "--addr", "127.0.0.1:0", "--data", self.data_dir, *args],
                                     stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.monotonic() + 30
        self.location = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            m = _READY.search(line)
            if m:
                self.location = m.group(1)
                break
        if self.location is None:
            self.stop()
            self.log.seek(0)
            raise RuntimeError(f"arrowquant serve did not start: {self.log.read().decode(errors='replace')}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()

    def log_text(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@pytest.fixture(scope="session")
def start_server(arrowquant_bin, tmp_path_factory):
    """start_server(*args, env=None) -> a context manager yielding a running Server."""
    @contextlib.contextmanager
    def start(*args, env=None):
        srv = Server(arrowquant_bin, tmp_path_factory.mktemp("serve-data"), args, env)
        try:
            yield srv
        finally:
            srv.stop()
    return start
