"""Traffic simulator and benchmarks for the express notification service."""
