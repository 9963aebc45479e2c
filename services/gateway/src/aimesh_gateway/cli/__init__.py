"""The user-facing ``aimesh`` command line: one module per command group."""
