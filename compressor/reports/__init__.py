"""Reports a person looks at (HTML pages of retrieval results)."""
