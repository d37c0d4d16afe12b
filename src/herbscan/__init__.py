"""herbscan: deep learning for digitized herbarium sheets."""

__version__ = "0.1.0"
