"""Float model -> `ChipModel`: plan, calibration, weight quantization, data-driven reconstruction."""

RECONSTRUCT_IMAGES = 48  # calibration images of the full reconstruction (where retraining starts)
FAST_RECONSTRUCT_IMAGES = 32  # those of the post-training path (`compress --no-retrain`: under a minute)
