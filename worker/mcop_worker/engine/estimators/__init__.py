"""Estimators: one per variance-reduction method (plain, antithetic, control variate)."""
