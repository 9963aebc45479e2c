"""Configuration, security, errors and the plumbing the routes rely on."""
