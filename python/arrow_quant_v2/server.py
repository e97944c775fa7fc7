"""Finding the arrowquant binary and running an embedded ``arrowquant serve`` on a free local port."""
from __future__ import annotations

import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import List, Optional

from .errors import BinaryNotFound, ServerStartError

BINARY_NAME = "arrowquant"
_READY = re.compile(r"serving Arrow Flight on (grpc(?:\+tls)?://\S+)")
HOW_TO_GET = ("build it with `make build` in an ArrowQuant checkout (it writes bin/arrowquant) and put it on PATH, "
              "or set ARROW_QUANT_BIN to its path; or connect to a running server with "
              "ArrowQuantV2(server=\"grpc://HOST:PORT\") / ARROW_QUANT_SERVER")


def _checkout_binaries() -> List[pathlib.Path]:
    """bin/arrowquant of an ArrowQuant checkout holding this package or the working directory."""
    starts = [pathlib.Path(__file__).resolve().parent, pathlib.Path.cwd()]
    out = []
    for start in starts:
        for d in [start, *start.parents]:
            gomod = d / "go.mod"
            if gomod.is_file():
                try:
                    if "module github.com/arrowquant/arrowquant" in gomod.read_text(errors="replace"):
                        out.append(d / "bin" / BINARY_NAME)
                except OSError:
                    pass
                break
    return out


def find_binary(explicit: Optional[str] = None) -> str:
    """The arrowquant binary: ``explicit``, else $ARROW_QUANT_BIN, else ``arrowquant`` on PATH, else the
    bin/arrowquant of the ArrowQuant checkout this package (or the working directory) is in."""
    for label, cand in (("binary", explicit), ("ARROW_QUANT_BIN", os.environ.get("ARROW_QUANT_BIN"))):
        if cand:
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return os.path.abspath(cand)
            raise BinaryNotFound(f"{label}={cand} is not an executable file; {HOW_TO_GET}")
    found = shutil.which(BINARY_NAME)
    if found:
        return found
    for cand in _checkout_binaries():
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise BinaryNotFound(f"no arrowquant binary found (ARROW_QUANT_BIN is unset, none on PATH, none in a "
                         f"checkout); {HOW_TO_GET}")


def _set_pdeathsig():  # pragma: no cover - runs in the child
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class EmbeddedServer:
    """``arrowquant serve --addr 127.0.0.1:0 --data DIR`` in a child process, with its own temporary
    data directory; stopped (SIGTERM, then SIGKILL) and cleaned up by stop(), at interpreter exit
    (weakref.finalize runs at exit), or when garbage collected."""

    def __init__(self, binary: Optional[str] = None, data_dir: Optional[str] = None,
                 args: Optional[List[str]] = None, timeout: float = 30.0):
        self.binary = find_binary(binary)
        self._own_data = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="arrowquant-serve-")
        self._log = tempfile.TemporaryFile(prefix="arrowquant-serve-", suffix=".log")
        # --exit-on-stdin-eof: the server also stops when this process dies and the pipe closes.
        cmd = [self.binary, "serve", "--addr", "127.0.0.1:0", "--data", self.data_dir, "--exit-on-stdin-eof",
               *(args or [])]
        # When started from the main thread, the child also ends if this process dies without cleanup.
        pre = _set_pdeathsig if (sys.platform.startswith("linux")
                                 and threading.current_thread() is threading.main_thread()) else None
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                         preexec_fn=pre, close_fds=True)
        except OSError as e:
            self._cleanup_files()
            raise ServerStartError(f"cannot run {self.binary}: {e}; {HOW_TO_GET}") from None
        self._finalizer = weakref.finalize(self, _stop, self.proc, self.data_dir if self._own_data else None,
                                           self._log)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True,
                         name="arrowquant-serve-stdout").start()
        deadline = time.monotonic() + timeout
        self.location = None
        while self.location is None:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = ""
                if left <= 0:
                    self.stop()
                    raise ServerStartError(f"{self.binary} serve did not report ready within {timeout:.0f} s")
                continue
            if line is None:  # stdout closed: the server exited
                code = self.proc.wait()
                log = self.log_tail()
                self.stop()
                raise ServerStartError(f"{self.binary} serve exited with status {code}: {log}")
            m = _READY.search(line)
            if m:
                self.location = m.group(1)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - limit))
            return self._log.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self._finalizer()

    def _cleanup_files(self):
        if self._own_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self._log.close()


def _pump(stream, q):
    try:
        for raw in iter(stream.readline, b""):
            q.put(raw.decode("utf-8", "replace"))
    except (OSError, ValueError):
        pass
    finally:
        q.put(None)


def _stop(proc, data_dir, log):
    if proc.poll() is None:
        proc.terminate()  # graceful shutdown: running calls get the server's shutdown timeout
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
    if data_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
    try:
        log.close()
    except OSError:
        pass

