"""The kopf operator for MonteCarloJob and PerfTuning."""
