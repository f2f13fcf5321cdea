"""The test harness's look-alike WIT types match what componentize-py
generates from wit/pump.wit, so code tested under the harness meets the
same shapes in the component."""

import dataclasses
import json
import os
import subprocess
import sys
from enum import Enum

import pytest

from pumphouse_sdk import _component_names, testing
from pumphouse_sdk.build import WIT_DIR, BuildError, componentize_py

DUMP = """
import dataclasses, json, sys
from enum import Enum
from wit_world.imports import types
out = {}
for name in sys.argv[1:]:
    obj = getattr(types, name)
    if isinstance(obj, type) and issubclass(obj, Enum):
        out[name] = [m.name for m in obj]
    else:
        out[name] = [f.name for f in dataclasses.fields(obj)]
print(json.dumps(out))
"""


def shape(obj):
    if isinstance(obj, type) and issubclass(obj, Enum):
        return [m.name for m in obj]
    return [f.name for f in dataclasses.fields(obj)]


def test_look_alikes_match_the_generated_bindings(tmp_path):
    try:
        tool = componentize_py()
    except BuildError as e:
        if os.environ.get("PUMPHOUSE_REQUIRE_COMPONENTIZE"):
            raise
        pytest.skip(str(e))
    subprocess.run([tool, "-q", "-d", str(WIT_DIR), "-w", "pump-sink", "bindings", str(tmp_path)], check=True)
    names = [n for n in _component_names.TYPES]
    r = subprocess.run([sys.executable, "-c", DUMP, *names], cwd=tmp_path, capture_output=True, text=True, check=True)
    real = json.loads(r.stdout)
    fake = {n: shape(getattr(testing.WIT, n)) for n in names}
    assert real == fake
