"""A minimal pyarrow Flight server: the baseline ArrowQuant's Flight throughput is measured against.

DoPut reads every batch and keeps nothing (raw ingest); DoGet serves the Arrow IPC file given by --serve, batch by
batch from a memory map. Prints "serving grpc://HOST:PORT" when ready.

    python bench/pyarrow_server.py [--serve model.arrow]
"""
import argparse
import sys

import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.ipc as ipc


class Baseline(fl.FlightServerBase):
    def __init__(self, location, serve=None):
        super().__init__(location)
        self.path = serve

    def do_put(self, context, descriptor, reader, writer):
        n = 0
        for chunk in reader:
            n += chunk.data.nbytes
        writer.write(pa.py_buffer(str(n).encode()))

    def do_get(self, context, ticket):
        f = ipc.open_file(pa.memory_map(self.path, "r"))
        return fl.GeneratorStream(f.schema, (f.get_batch(i) for i in range(f.num_record_batches)))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--serve", help="Arrow IPC file DoGet streams")
    args = ap.parse_args()
    srv = Baseline("grpc://127.0.0.1:0", args.serve)
    print(f"serving grpc://127.0.0.1:{srv.port}", flush=True)
    srv.serve()


if __name__ == "__main__":
    sys.exit(main())
