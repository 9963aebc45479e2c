"""Code shared by every aimesh service.

Kept deliberately small: generated gRPC stubs (the ``aimesh`` package next to this one),
the gRPC server factory, the settings base, logging, metrics and interceptors; and what
more than one service would otherwise write again: the request limits (``limits``), the
error types with the mapping of a backend's status back to them (``errors``), the
embedding service's client (``embedding_client``), the Struct converter (``structs``) and
the percentile figures are reported with (``stats``).
"""
