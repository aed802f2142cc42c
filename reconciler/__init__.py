"""portside: LoadBalancer IPs, ARP announcements and Cloudflare tunnel routes, from one Git repo."""

__version__ = "0.1.0"
