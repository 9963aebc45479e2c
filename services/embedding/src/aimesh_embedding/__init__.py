"""aimesh embedding service: one sentence-transformers model behind gRPC."""
