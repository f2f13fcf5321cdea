"""Benchmark fixture: keeps records whose `ResponseCode` is at least 500
(`scripts/bench langs`; the Rust and JS filters do the same)."""

from pumphouse_sdk import Filter


class Keep5xx(Filter):
    name = "keep-5xx-py"
    accepts = "json"

    def process(self, batch):
        return [i for i, v in enumerate(batch.values()) if (v.get("ResponseCode") or 0) >= 500]
