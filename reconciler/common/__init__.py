"""Small pieces every layer shares: the exception tree, atomic writes, secrets, metrics, HTTP serving."""
