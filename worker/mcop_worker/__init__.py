"""The Monte Carlo engine, the worker runtime and the `mcop` command line."""
