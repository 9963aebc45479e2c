"""aimesh LLM router: prompt templates and model providers behind model aliases, over gRPC."""
