"""service_requests(): what each Service asks of the allocator, from the Service and its ServiceExposure.

A Service can say what it wants in two places: on itself (``spec.loadBalancerIP`` and MetalLB's
annotations, so Services written for MetalLB keep working) and in a ServiceExposure in the
repo. Either place may be used alone. When both say something about the same thing, they must
agree: different pools, addresses or sharing keys are a conflict that leaves the Service pending
with a reason naming both sides, rather than one silently winning.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from reconciler.allocator.values import Allocation, ServiceRequest
from reconciler.desired.ipranges import RangeSyntaxError, parse_ip
from reconciler.desired.models import ServiceExposure
from reconciler.planning.live import (
    LOADBALANCER_CLASS,
    METALLB_ADDRESS_POOL,
    METALLB_ALLOW_SHARED_IP,
    METALLB_LOADBALANCER_IPS,
    LiveService,
)

# MetalLB's pre-0.13 annotation prefix, still honoured by MetalLB when the new one is absent.
_DEPRECATED = {
    METALLB_ADDRESS_POOL: "metallb.universe.tf/address-pool",
    METALLB_LOADBALANCER_IPS: "metallb.universe.tf/loadBalancerIPs",
    METALLB_ALLOW_SHARED_IP: "metallb.universe.tf/allow-shared-ip",
}
# Every annotation by which a Service asks for something itself.
_REQUEST_ANNOTATIONS = frozenset({*_DEPRECATED, *_DEPRECATED.values()})
_service_key = attrgetter("key")


def service_requests(services: Sequence[LiveService], exposures: Sequence[ServiceExposure],
                     lb_class: str = LOADBALANCER_CLASS) -> tuple[list[ServiceRequest], list[Allocation]]:
    """Requests to allocate, plus pending Allocations for Services whose wishes are invalid.

    Services with another ``spec.loadBalancerClass`` belong to another controller and are left
    out entirely. An exposure applies to the Service with its namespace/name; its ``pool``,
    ``addresses`` and ``sharingKey`` combine with the Service's own settings as the module
    docstring says. An invalid Service that already holds IPs is still returned as a request,
    marked ``invalid``, so it keeps them (and nobody else takes them) until it is fixed.
    """
    by_key = {e.spec.service.key: e for e in exposures}
    requests: list[ServiceRequest] = []
    rejected: list[Allocation] = []
    for svc in sorted(services, key=_service_key):
        if svc.load_balancer_class is not None and svc.load_balancer_class != lb_class:
            continue
        problems: list[str] = []
        exposure = by_key.get(svc.key)
        requested: tuple[str, ...]
        if svc.load_balancer_ip is None and _REQUEST_ANNOTATIONS.isdisjoint(svc.annotations):
            # The Service itself asks for nothing (always so for local stand-ins): only the
            # exposure speaks, and there is nothing to agree with.
            if exposure is None:
                requested, pool, sharing = (), None, None
            else:
                spec = exposure.spec
                requested = (_from_exposure(exposure, problems) or ()) if spec.addresses else ()
                pool, sharing = spec.pool, spec.sharingKey
        else:
            requested = _requested(svc, exposure, problems)
            pool = _agree("pool", exposure.spec.pool if exposure else None,
                          svc, METALLB_ADDRESS_POOL, exposure, problems)
            sharing = _agree("sharing key", exposure.spec.sharingKey if exposure else None,
                             svc, METALLB_ALLOW_SHARED_IP, exposure, problems)
        invalid = "; ".join(problems) if problems else None
        if invalid is not None and not svc.ingress:
            rejected.append(Allocation(svc.key, pending_reason=invalid))
            continue
        requests.append(ServiceRequest(
            key=svc.key,
            namespace=svc.namespace,
            labels=svc.labels,
            current=tuple(svc.ingress),
            requested=requested,
            pool=pool,
            sharing_key=sharing,
            ports=tuple(svc.ports),
            external_traffic_policy=svc.external_traffic_policy,
            selector=svc.selector,
            ip_family_policy=svc.ip_family_policy,
            ip_families=tuple(svc.ip_families),
            current_pool=svc.recorded_pool,
            invalid=invalid,
        ))
    return requests, rejected


def metallb_annotation(svc: LiveService, name: str) -> str | None:
    """A MetalLB annotation of the Service (or its pre-0.13 name); None when absent or empty."""
    value = svc.annotations.get(name)
    if value is None:
        value = svc.annotations.get(_DEPRECATED[name])
    value = value.strip() if value is not None else None
    return value or None  # an empty annotation asks for nothing (MetalLB)


def _agree(what: str, from_exposure: str | None, svc: LiveService, annotation: str,
           exposure: ServiceExposure | None, problems: list[str]) -> str | None:
    from_service = metallb_annotation(svc, annotation)
    if from_exposure is not None and from_service is not None and from_exposure != from_service:
        assert exposure is not None
        problems.append(f"ServiceExposure {exposure.metadata.name} sets {what} {from_exposure!r} but "
                        f"the Service's {annotation} annotation says {from_service!r}; "
                        f"make them agree or drop one")
        return None
    return from_exposure if from_exposure is not None else from_service


def _normalise(texts: Sequence[str], where: str, problems: list[str]) -> tuple[str, ...] | None:
    out = []
    for text in texts:
        try:
            out.append(str(parse_ip(text)))
        except RangeSyntaxError:
            problems.append(f"{where}: {text.strip()!r} is not an IP address")
            return None
    return tuple(out)


def _from_exposure(exposure: ServiceExposure, problems: list[str]) -> tuple[str, ...] | None:
    """The exposure's spec.addresses, canonical; None (and a problem) when one is no address."""
    if not exposure.spec.addresses:
        return ()
    return _normalise(exposure.spec.addresses, f"ServiceExposure {exposure.metadata.name} spec.addresses", problems)


def _requested(svc: LiveService, exposure: ServiceExposure | None, problems: list[str]) -> tuple[str, ...]:
    field_value = (svc.load_balancer_ip or "").strip()
    annotation = metallb_annotation(svc, METALLB_LOADBALANCER_IPS)
    on_service: tuple[str, ...] | None = ()
    source = ""
    if field_value and annotation:
        problems.append(f"the Service sets both spec.loadBalancerIP and the {METALLB_LOADBALANCER_IPS} "
                        f"annotation; keep one")
        on_service = None
    elif annotation:
        source = f"the {METALLB_LOADBALANCER_IPS} annotation"
        on_service = _normalise(annotation.split(","), source, problems)
    elif field_value:
        source = "spec.loadBalancerIP"
        on_service = _normalise([field_value], source, problems)
    in_exposure = _from_exposure(exposure, problems) if exposure is not None else ()
    if on_service is None or in_exposure is None:
        return ()
    if on_service and in_exposure and set(on_service) != set(in_exposure):
        assert exposure is not None
        problems.append(f"ServiceExposure {exposure.metadata.name} requests {', '.join(in_exposure)} but "
                        f"{source} requests {', '.join(on_service)}; make them agree or drop one")
        return ()
    return in_exposure or on_service
