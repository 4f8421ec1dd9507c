"""Benchmarks for sandbox-runtime: warm and cold invoke latency and throughput, each as a ratio to a
floor measured in the same run on the same machine (`python -m bench`, `scripts/bench`).

The floors: a bare Starlette echo endpoint served by the same uvicorn stack as `serve` (for the warm
path), and `python3 -c pass` inside the same bwrap sandbox flags as a function (for the cold start).
The Docker backend is measured against bwrap, the same function in one service (ratio docker/bwrap);
its rows are skipped, with the reason, when no Docker engine answers. See docs/performance.md.
"""
