"""Gaussian robust-features model (paper section 4) in closed form and numerically."""
