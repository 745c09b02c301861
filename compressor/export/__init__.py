"""What a chip team takes into its own flow: weight memory images (and, beside them, a C model)."""
