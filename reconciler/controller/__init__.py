"""The GitOps controller behind `portside run`: triggers -> one reconcile at a time -> status.

``loop`` is the core (a source, a reconcile function, triggers); ``webhook``, ``server``,
``leader`` and ``watch`` are the thin shells around it that touch the network.
"""
