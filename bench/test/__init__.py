"""
Tests of the benchmark's own machinery: C{.venv/bin/trial bench.test}.
"""
