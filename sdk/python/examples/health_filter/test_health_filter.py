import json

import pytest

from health_filter import HealthFilter, mask
from pumphouse_sdk import KEEP_ALL, ConfigError, Replace
from pumphouse_sdk.testing import Harness


def test_mask_keeps_the_last_characters():
    assert mask("abcdef123456", 4) == "********3456"
    assert mask("abcd", 4) == "****"
    assert mask("ab", 4) == "**"
    assert mask("abc", 0) == "***"


def test_drops_health_checks_and_masks_keys():
    h = Harness(HealthFilter, {"paths": ["/health", "/status/*"]})
    batch = h.batch(
        "tyk",
        [
            {"Path": "/health", "APIKey": "k1"},
            {"Path": "/api/users", "APIKey": "secret-key-9876", "ResponseCode": 200},
            {"Path": "/status/db", "APIKey": "k3"},
            {"Path": "/healthz", "APIKey": ""},
        ],
        ids=[10, 20, 30, 40],
        timestamps=[1, 2, 3, 4],
    )
    v = h.process(batch)
    assert isinstance(v, Replace)
    assert [(r.id, r.timestamp) for r in v.records] == [(20, 2), (40, 4)]
    kept = [json.loads(r.payload) for r in v.records]
    assert kept[0] == {"Path": "/api/users", "APIKey": "***********9876", "ResponseCode": 200}
    assert kept[1] == {"Path": "/healthz", "APIKey": ""}
    assert h.counter("health_checks_dropped") == 2


def test_other_schemas_pass_unchanged():
    h = Harness(HealthFilter)
    assert h.process(h.batch("iam", [{"Username": "alice"}])) is KEEP_ALL


@pytest.mark.parametrize("config, needle", [({"paths": "/health"}, "paths"), ({"keep_last": -1}, "keep_last"), ({"keep_last": True}, "keep_last")])
def test_bad_config_is_refused(config, needle):
    with pytest.raises(ConfigError, match=needle):
        Harness(HealthFilter, config)
