"""The job model: a MonteCarloJob manifest validated against the CRDs, parsed into the frozen
spec that determines the numbers, and its hash. Imports nothing else of the project."""
