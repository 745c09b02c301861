"""Retrieval: scoring (mAP), the search index, distributed extraction.

`chipq.retrieval` re-exports `chipq.retrieval.scoring` so that code written before the module
became a package keeps working.
"""

from .scoring import *  # noqa: F401,F403
from .scoring import SCORE_CHUNK_BYTES, _POPCOUNT  # noqa: F401
