"""Figures and tables of the paper, rebuilt from recorded results."""
