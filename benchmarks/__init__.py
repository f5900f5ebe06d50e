"""Benchmarks of fcos_tf, run from the repository root as ``python -m benchmarks.<script>``.

``benchmarks.common`` is the helper library every script uses (machine line, timing, FLOP
counting, the peers); ``tests/test_benchmarks_common.py`` tests it.
"""
