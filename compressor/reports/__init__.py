"""Reports a person reads: inspect, verify, the demo, and HTML pages of retrieval results."""
