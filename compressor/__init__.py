"""chipq: compress a VGG-16 retrieval descriptor extractor for an integer ASIC, and prove it works."""

__version__ = "0.1.0"
