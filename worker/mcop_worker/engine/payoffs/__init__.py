"""Payoffs: the value of a path (and its control variate) per instrument (one module each)."""
