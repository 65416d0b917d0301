"""Benchmarks of the farm: overhead, submission, scaling (CPU) and the GPU runtimes."""
