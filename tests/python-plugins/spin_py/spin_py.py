"""Test fixture: a Python sink whose `write` never returns. Only the
host's execution deadline (epoch interruption) ends the call, as for the
Rust `spin` fixture."""

from pumphouse_sdk import Sink


class SpinSink(Sink):
    name = "spin-py"
    accepts = "msgpack"

    def write(self, batch):
        n = len(batch)
        while True:
            n += 1
