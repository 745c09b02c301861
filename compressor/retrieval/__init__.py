"""Retrieval: ROIs, NIP/RNIP pooling, descriptors and their files, scoring (mAP), the search index,
and distributed extraction."""
