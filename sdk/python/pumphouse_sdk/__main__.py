import sys

USAGE = "usage: python -m pumphouse_sdk build APP.py [-o OUT.wasm]"

if len(sys.argv) < 2 or sys.argv[1] != "build":
    print(USAGE, file=sys.stderr)
    sys.exit(2)
from .build import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
