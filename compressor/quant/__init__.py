"""Float model -> `ChipModel`: plan, calibration, weight quantization, data-driven reconstruction."""

RECONSTRUCT_IMAGES = 32  # calibration images the reconstruction uses by default (the first N)
