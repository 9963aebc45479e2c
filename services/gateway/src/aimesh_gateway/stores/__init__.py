"""What the gateway keeps about calls: usage records and reports, feedback, conversation
metadata, and the response cache."""
