"""aimesh model server: a local causal LM behind the OpenAI chat-completions protocol."""
