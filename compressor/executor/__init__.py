"""Integer executors of chip format v1: `golden` defines the arithmetic, `fast` is what users run."""
