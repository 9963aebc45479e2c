"""Code shared by every aimesh service.

Kept deliberately small: generated gRPC stubs (the ``aimesh`` package next to this one),
the gRPC server factory, the settings base, logging, metrics and interceptors.
"""
