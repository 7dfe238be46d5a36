"""The load generator behind `sandbox-broker bench` (and `make bench`): many keep-alive
connections allocating at once, one JSON report with throughput, statuses, latency
percentiles and a double-allocation check. Shipped in the package so an operator can
load-test a deployment with the same tool the project measures itself with."""
