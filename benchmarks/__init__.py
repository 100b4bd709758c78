"""Measured speed of the bundle's machinery against the standard alternatives (`make bench`)."""
