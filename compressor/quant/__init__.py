"""Float model -> `ChipModel`: plan, calibration, weight quantization, data-driven reconstruction."""

MAX_CALIB_IMAGES = 64  # calibration photos: enough for stable shifts; the first N in sorted order, so runs repeat
RECONSTRUCT_IMAGES = 64  # calibration images of the full reconstruction (where retraining starts; bench/retrain_sweep.py)
FAST_RECONSTRUCT_IMAGES = 32  # those of the post-training path (`compress --no-retrain`: under a minute)
SALIENCIES = ("obs", "energy")  # how a pruned layer chooses the kernels it removes (`reconstruct.kernel_saliency`)
SALIENCY = "obs"  # the reconstruction's default, and its measurement: `reconstruct.ReconstructConfig.saliency`
# the planner's default probe by name (`sensitivity.Probe`, `chipq plan --probe`; PyTorch-free here, so
# the CLI reads it for its option default): the noise gain, with its 5-bit alpha run. On the real
# VGG-16 its first run takes 5.8 minutes with the check against the exact measurement's 16. Its plans
# against the exact one's on the held-out photos (docs/compress.md, plan stability): post-training
# as good at 2 MB (+0.004) and at the paper's 3.9 MB (-0.010, -0.024..+0.002; 0.945 cosine against
# 0.954); without the 5-bit run also at 5 and 7 MB, better at 3 MB (+0.019), and retrained as good at
# 2 MB and 3.9 MB (bench/v2_curve.py --probe).
PROBES = ("exact", "noise-gain")
PROBE = "noise-gain"
