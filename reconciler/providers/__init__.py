"""Live providers: the shells that talk to Kubernetes and Cloudflare."""
