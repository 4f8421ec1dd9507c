"""Reports what /opt holds and which layer's modules Python imports."""

import importlib
import os


def handler(event, context):
    files = {}
    for root, dirs, names in os.walk("/opt"):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            path = os.path.join(root, name)
            with open(path) as f:
                files[path] = f.read()
    modules = {}
    for name in event.get("modules", []):
        try:
            modules[name] = importlib.import_module(name).WHO
        except ImportError as exc:
            modules[name] = f"ImportError: {exc}"
    try:
        with open("/opt/written-by-function", "w"):
            writable = True
    except OSError:
        writable = False
    return {"files": files, "modules": modules, "opt_writable": writable, "PATH": os.environ["PATH"]}
