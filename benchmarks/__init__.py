"""tulu-quant's benchmarks: `make bench` (all sections) or `python -m benchmarks.bench SECTION --out bench-out`.

They live beside the package, not in it: they read and write the checkout's docs/ and configs/. Each section writes
bench-out/NAME.json (every figure) and bench-out/NAME.md, and `docs` assembles the sections into docs/benchmarks.md,
every one naming the machine it ran on (common.machine).
"""
