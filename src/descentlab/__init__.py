"""descentlab: compare gradient-descent optimizers on NumPy networks written from scratch."""

__version__ = "0.1.0"
