"""Defaulting of Deployments, Secrets and PodDisruptionBudgets as the real registry does it (the
fields a client sees come back that it never sent), and Go's omitempty on the pod fields portside
sends empty: what a client compares against after a write."""

from __future__ import annotations

from typing import Any

from tests.fakes.kubeapi.kinds import Obj

# Pod and container fields that are Go slices or maps with omitempty: sent empty, they come back absent.
_POD_OMITEMPTY = ("volumes", "nodeSelector", "tolerations", "initContainers", "imagePullSecrets")
_CONTAINER_OMITEMPTY = ("volumeMounts", "env", "ports", "args", "command")


def default_workload(kind: str, obj: Obj) -> None:
    """SetDefaults_* of apps/v1 Deployment, v1 Secret and the pod template, in place."""
    if kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "Deployment":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type") == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
        template = spec.setdefault("template", {})
        template.setdefault("metadata", {})
        _default_pod(template.setdefault("spec", {}))


def _default_pod(pod: Obj) -> None:
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("schedulerName", "default-scheduler")
    pod.setdefault("securityContext", {})
    for key in _POD_OMITEMPTY:
        if pod.get(key) in ([], {}):
            del pod[key]
    for volume in pod.get("volumes") or []:
        if "configMap" in volume:
            volume["configMap"].setdefault("defaultMode", 0o644)
    for container in pod.get("containers") or []:
        _default_container(container)


def _default_container(container: Obj) -> None:
    image = str(container.get("image") or "")
    tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
    container.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for key in _CONTAINER_OMITEMPTY:
        if container.get(key) == []:
            del container[key]
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in (container.get(k) for k in ("readinessProbe", "livenessProbe", "startupProbe")):
        if isinstance(probe, dict):
            _default_probe(probe)


def _default_probe(probe: dict[str, Any]) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")
