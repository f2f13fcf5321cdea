"""health-filter: drops Tyk health-check records and masks API keys.

Records of other schemas pass unchanged. Config (all optional):

    paths = ["/health", "/healthz", "/ping", "/status/*"]   # "*": prefix
    keep_last = 4          # APIKey characters left unmasked
"""

from pumphouse_sdk import KEEP_ALL, ConfigError, Filter, Replace, counter_add

DEFAULT_PATHS = ["/health", "/healthz", "/readyz", "/ping"]
DEFAULT_KEEP_LAST = 4


def mask(key: str, keep_last: int) -> str:
    """`key` with all but its last `keep_last` characters as `*`; a key no
    longer than that is masked whole, so it never shows in full."""
    if len(key) <= keep_last:
        return "*" * len(key)
    return "*" * (len(key) - keep_last) + key[len(key) - keep_last :]


class HealthFilter(Filter):
    name = "health-filter"
    version = "0.1.0"
    accepts = "json"

    def init(self, config):
        paths = config.get("paths", DEFAULT_PATHS)
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError("paths: expected a list of non-empty strings")
        self.exact = {p for p in paths if not p.endswith("*")}
        self.prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))
        keep_last = config.get("keep_last", DEFAULT_KEEP_LAST)
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or not 0 <= keep_last <= 64:
            raise ConfigError(f"keep_last: expected an integer from 0 to 64, got {keep_last!r}")
        self.keep_last = keep_last

    def is_health_check(self, path) -> bool:
        return isinstance(path, str) and (
            path in self.exact or bool(self.prefixes) and path.startswith(self.prefixes)
        )

    def process(self, batch):
        if batch.schema != "tyk":
            return KEEP_ALL
        out = []
        for rec in batch:
            v = rec.value
            if self.is_health_check(v.get("Path")):
                continue
            key = v.get("APIKey")
            if isinstance(key, str) and key:
                v["APIKey"] = mask(key, self.keep_last)
            out.append(rec.replaced(v))
        dropped = len(batch) - len(out)
        if dropped:
            counter_add("health_checks_dropped", dropped)
        return Replace(out)
