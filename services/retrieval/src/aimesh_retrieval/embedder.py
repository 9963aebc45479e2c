"""Only the import of ``servicer.py``, until it names ``aimesh_common.embedding_client``.

The embedding client lives once, in the kit (issue 18.2); when servicer.py imports
``EmbeddingClient`` and ``ModelInfo`` from there, this module goes.
"""

from aimesh_common.embedding_client import EmbeddingClient as EmbeddingClient
from aimesh_common.embedding_client import ModelInfo as ModelInfo
