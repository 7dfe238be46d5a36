"""Load-test kit: the baseline app, the k6 scripts (k6/) and a smoke test of the Python
load runner (app/loadgen/, `sandbox-broker bench`).

See docs/performance.md for the scenarios, how to run them and measured results.
"""
