"""How much a caller may do: rate limits (RPM/TPM) and their tenant overrides, and the
per-request body-size and time limits."""
