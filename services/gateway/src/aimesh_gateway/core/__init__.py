"""What every feature relies on: settings, errors, background work, cross-worker
invalidations and the gRPC backends."""
