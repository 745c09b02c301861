"""Float model -> `ChipModel`: plan, calibration, weight quantization, data-driven reconstruction."""

RECONSTRUCT_IMAGES = 64  # calibration images of the full reconstruction (where retraining starts; bench/retrain_sweep.py)
FAST_RECONSTRUCT_IMAGES = 32  # those of the post-training path (`compress --no-retrain`: under a minute)
SALIENCIES = ("obs", "energy")  # how a pruned layer chooses the kernels it removes (`reconstruct.kernel_saliency`)
SALIENCY = "obs"  # the reconstruction's default, and its measurement: `reconstruct.ReconstructConfig.saliency`
# the planner's default probe by name (`sensitivity.Probe`, `chipq plan --probe`; PyTorch-free here, so
# the CLI reads it for its option default): the noise gain. On the real VGG-16 its first run is a
# fifth of the exact measurement's (5 minutes with the check against 16). Its plans against the exact
# one's on the held-out photos: post-training (bench/plan.py, both probes' rows in git history) as
# good in mAP at 2, 5 and 7 MB, better at 3 MB (+0.019, +0.002..+0.037), worse at the paper's 3.9 MB
# (-0.018, -0.030..-0.007); retrained, the default compress (bench/v2_curve.py --probe), as good at
# 2 MB (+0.016, -0.002..+0.034) and 3.9 MB (-0.002, -0.013..+0.010), at 3.9 MB with a cosine 0.0055
# lower (0.958 against 0.964). docs/compress.md, plan stability.
PROBES = ("exact", "noise-gain")
PROBE = "noise-gain"
