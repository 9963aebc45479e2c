"""Who is calling: API keys, local users and JWTs, OIDC tokens, roles."""
