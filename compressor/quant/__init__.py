"""Float model -> `ChipModel`: plan, calibration, weight quantization, data-driven reconstruction."""

RECONSTRUCT_IMAGES = 64  # calibration images of the full reconstruction (where retraining starts; bench/retrain_sweep.py)
FAST_RECONSTRUCT_IMAGES = 32  # those of the post-training path (`compress --no-retrain`: under a minute)
SALIENCIES = ("obs", "energy")  # how a pruned layer chooses the kernels it removes (`reconstruct.kernel_saliency`)
SALIENCY = "obs"  # the reconstruction's default, and its measurement: `reconstruct.ReconstructConfig.saliency`
