"""Load-test kit: the Python load runner, the baseline app and the k6 scripts (k6/).

See docs/performance.md for the scenarios, how to run them and measured results.
"""
