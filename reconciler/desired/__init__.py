"""The desired state: documents loaded from YAML, validated, with where each came from."""
