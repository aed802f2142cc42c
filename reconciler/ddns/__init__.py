"""Dynamic DNS: the network's public address, learnt from a list of sources, kept in A/AAAA records.

``addresses`` is pure (parsing answers, judging addresses, agreement between sources); ``lookup``
is the shell that asks HTTP endpoints and reads local interfaces.
"""
