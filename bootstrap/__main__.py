"""`python -m bootstrap` (or `-m sandbox_bootstrap` inside the sandbox) runs the runtime loop."""

from __future__ import annotations

from .main import main

main()
