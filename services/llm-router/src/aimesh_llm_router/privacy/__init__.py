"""Personal data kept from third-party providers: detection, reversible redaction and the
per-alias (and per-tenant) policy at the provider boundary (docs/privacy.md)."""
