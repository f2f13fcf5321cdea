"""`python -m pumphouse_sdk build APP.py`: a plugin file to a component.

Finds the one `Sink` or `Filter` subclass APP.py defines, writes a tiny
entry module that exports it, and runs componentize-py against the WIT
contract shipped with the SDK (`wit/pump.wit`), so the bindings are
generated from the contract at every build. Only the Python sources of
APP.py's directory (not its tests) and the SDK are bundled, never the
build environment's site-packages.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .plugin import Filter, Sink, check_class

#: The componentize-py release the SDK is built and tested with.
COMPONENTIZE_PY_VERSION = "0.25.1"

SDK_DIR = Path(__file__).resolve().parent
WIT_DIR = SDK_DIR / "wit"
ENTRY = "pumphouse_entry"


_IGNORE_APP = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.wasm", ".*", "target", "node_modules", "venv", "tests", "test_*.py", "pumphouse_sdk"
)
_IGNORE_SDK = shutil.ignore_patterns("__pycache__", "*.pyc", "wit", "build.py", "__main__.py")


class BuildError(Exception):
    """Why a plugin could not be built."""


def find_class(app: Path):
    """The plugin class `app` defines, and its kind."""
    if not app.is_file():
        raise BuildError(f"{app}: no such file")
    name = app.stem
    spec = importlib.util.spec_from_file_location(name, app)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(app.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise BuildError(f"{app}: importing it failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(app.parent))
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, (Sink, Filter)) and v.__module__ == name
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise BuildError(f"{app}: define exactly one subclass of Sink or Filter (found: {names})")
    cls = found[0]
    try:
        kind = check_class(cls)
    except TypeError as e:
        raise BuildError(f"{app}: {e}") from None
    return name, cls, kind


def componentize_py():
    """The componentize-py command: $COMPONENTIZE_PY, next to this Python,
    or on PATH."""
    given = os.environ.get("COMPONENTIZE_PY")
    if given:
        return given
    beside = Path(sys.executable).parent / "componentize-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("componentize-py")
    if found:
        return found
    raise BuildError(
        f"componentize-py not found: pip install componentize-py=={COMPONENTIZE_PY_VERSION} "
        "(or set COMPONENTIZE_PY to its path)"
    )


def build(app: Path, out: Path, quiet: bool = False) -> str:
    """Builds `app` into the component `out`; returns the plugin's kind."""
    app = app.resolve()
    module, cls, kind = find_class(app)
    if module in (ENTRY, "pumphouse_sdk", "wit_world", "pump_sink", "pump_filter"):
        raise BuildError(f"{app}: rename the file; {module!r} is a name the build uses")
    export = "Sink" if kind == "sink" else "Filter"
    with tempfile.TemporaryDirectory(prefix="pumphouse-build-") as tmp:
        # Only the plugin's sources and the SDK go into the component: a
        # staged copy, without caches, tests, build output or environments.
        stage = Path(tmp) / "app"
        shutil.copytree(app.parent, stage, ignore=_IGNORE_APP)
        shutil.copytree(SDK_DIR, stage / "pumphouse_sdk", ignore=_IGNORE_SDK)
        (stage / f"{ENTRY}.py").write_text(
            "from pumphouse_sdk import _component\n"
            f"from {module} import {cls.__name__} as _plugin_class\n"
            f"Plugin, {export} = _component.exports(_plugin_class)\n"
        )
        cmd = [componentize_py(), "-d", str(WIT_DIR), "-w", f"pump-{kind}"]
        if quiet:
            cmd.append("-q")
        cmd += ["componentize", "-p", str(stage), ENTRY, "-o", str(out.resolve())]
        env = dict(os.environ)
        # componentize-py adds a virtualenv's site-packages to the bundle;
        # the plugin needs only its own sources and the SDK.
        env.pop("VIRTUAL_ENV", None)
        r = subprocess.run(cmd, env=env, cwd=tmp)
        if r.returncode != 0:
            raise BuildError(f"componentize-py failed (exit {r.returncode}): {' '.join(cmd)}")
    return kind


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m pumphouse_sdk build", description=__doc__.splitlines()[0])
    ap.add_argument("app", type=Path, help="the plugin's .py file")
    ap.add_argument("-o", "--output", type=Path, help="the .wasm to write (default: APP with .wasm)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    # Importing the app to find its class must leave no caches behind.
    sys.dont_write_bytecode = True
    out = args.output or args.app.with_suffix(".wasm")
    try:
        kind = build(args.app, out, args.quiet)
    except BuildError as e:
        print(f"pumphouse_sdk build: {e}", file=sys.stderr)
        return 1
    print(f"built {out} ({kind}, {out.stat().st_size} bytes)")
    return 0
