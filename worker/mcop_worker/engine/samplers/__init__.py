"""Samplers: where the standard normals of each sample unit come from (one module each)."""
