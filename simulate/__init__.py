"""Monte-Carlo engine (NumPy or CuPy) that cross-checks theory/."""
