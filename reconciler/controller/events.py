"""Kubernetes Events for what a human must fix: a broken or unverified revision, a refused plan."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from reconciler.controller.leader import LEASE_NAME
from reconciler.controller.loop import EventSink

log = logging.getLogger(__name__)

COMPONENT = "portside-reconciler"


def involved_object(namespace: str) -> dict[str, str]:
    """The Pod we run in (downward API ``POD_NAME``), else the controller's Lease."""
    pod = os.environ.get("POD_NAME")
    if pod:
        return {"apiVersion": "v1", "kind": "Pod", "name": pod,
                "namespace": os.environ.get("POD_NAMESPACE", namespace)}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": LEASE_NAME, "namespace": namespace}


def kube_event_sink(api: client.ApiClient, namespace: str) -> EventSink:
    """An :data:`EventSink` that records core/v1 Events; a failure to record is only logged."""
    core: Any = client.CoreV1Api(api)
    involved = involved_object(namespace)

    def record(type_: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
            "involvedObject": involved, "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            core.create_namespaced_event(involved["namespace"], body, _preload_content=False)
        except (ApiException, OSError) as exc:
            log.warning("could not record event %s: %s", reason, getattr(exc, "status", exc))

    return record
