"""The speaker: one per node, answers ARP/NDP for the IPs this node is elected to announce.

Pure parts: ``packets`` (frames), ``heartbeat`` (signed liveness messages), ``election`` (who
announces what). Shells: ``responder`` (raw sockets), ``links`` (interfaces, via netlink),
``sources`` (the announcement table from a file or a ConfigMap), ``daemon`` (the event loop),
``cli``.
"""
