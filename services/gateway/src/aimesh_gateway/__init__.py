"""aimesh gateway: the REST front door (native and OpenAI-compatible API) over gRPC backends."""
