"""Test fixture: a Python sink whose `write` allocates without bound,
touching every page. Only the host's memory limit ends it, as for the Rust
`hog` fixture."""

from pumphouse_sdk import Sink


class HogSink(Sink):
    name = "hog-py"
    accepts = "msgpack"

    def init(self, config):
        self.hoard = []

    def write(self, batch):
        while True:
            self.hoard.append(bytearray(b"\xa5" * (1 << 20)))
