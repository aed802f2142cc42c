"""A fake Kubernetes API server on loopback, for tests that drive the official `kubernetes` client.

`FakeKube` serves plain HTTP (no TLS) on 127.0.0.1 from a ThreadingHTTPServer, and the official
client talks to it exactly as to a real apiserver (`fake.client_configuration()`, or
`fake.write_kubeconfig(path)` + `kubernetes.config.load_kube_config`).

Resources served (paths as the real server has them):
  core/v1 Services (+ /status), Nodes (+ /status, cluster-scoped), Namespaces (+ /status,
  cluster-scoped), ConfigMaps, Events; discovery.k8s.io/v1 EndpointSlices;
  coordination.k8s.io/v1 Leases; v1 Secrets, apps/v1 Deployments (+ /status) and policy/v1
  PodDisruptionBudgets (+ /status) for the tunnel connectors; custom resources of the CRDs given as `crds=` (MetalLB's
  metallb.io/v1beta1 IPAddressPool and L2Advertisement in the tests; see kubeapi/crds.py for what
  a real server does with them and what is reproduced).  Also GET /version and discovery (/api,
  /api/v1, /apis, /apis/{group}, /apis/{group}/{version}).  events.k8s.io/v1 is not served.

Server behaviours reproduced:
- One global, monotonically increasing resourceVersion (a decimal string, as etcd revisions are);
  every object carries metadata.resourceVersion, uid, creationTimestamp; EndpointSlices, Deployments
  and PodDisruptionBudgets also a generation (1 on create, +1 when anything but metadata or, where
  there is one, status changes), as their registry strategy does.
  metadata.namespace comes from the URL; a differing namespace in the body is 400 BadRequest.
- create: 201; 409 AlreadyExists; 404 when the namespace does not exist (NamespaceLifecycle);
  422 Invalid without metadata.name/generateName or with a malformed name/label; generateName;
  500 when metadata.resourceVersion is set on create (as the etcd3 store refuses it).
- get: 404 NotFound.  replace (PUT): 409 Conflict on a stale metadata.resourceVersion; Leases and
  custom resources require one (422 `... metadata.resourceVersion: Invalid value: 0x0: must be
  specified for an update`), the built-in kinds above allow unconditional updates; Leases and
  Events may be created by PUT (AllowCreateOnUpdate), the others 404; a name differing from the
  URL is 400.
- Status subresource (Services, Nodes, Namespaces): writes to the main resource keep the old
  status; PUT/PATCH to /status keep the old spec (metadata written there is kept, as the real
  status strategies only reset spec).  A Service's status is dropped on create.
- An update that changes nothing is a no-op: same resourceVersion, no watch event.
- Defaulting as the real registry does it for the fields portside reads: Service type, clusterIP
  (and clusterIPs, ipFamilies, ipFamilyPolicy), port protocol and targetPort, nodePorts for
  NodePort/LoadBalancer, externalTrafficPolicy, internalTrafficPolicy, sessionAffinity,
  allocateLoadBalancerNodePorts, status.loadBalancer.ingress[].ipMode=VIP (Kubernetes >= 1.30);
  Namespace phase Active, finalizers and the kubernetes.io/metadata.name label; a Secret's type;
  a Deployment's replicas, strategy, revisionHistoryLimit, progressDeadlineSeconds and its pod
  template's (restartPolicy, dnsPolicy, imagePullPolicy, probe timings, ...), with empty pod lists
  and maps left out as Go's omitempty does (kubeapi/workloads.py). clusterIP and a
  port's nodePort are kept when an update leaves them out; changing clusterIP is 422.
- Decoding: a MicroTime (Lease spec.acquireTime/renewTime, Event eventTime) must have exactly six
  fractional digits; otherwise 400 `Lease in version "v1" cannot be handled as a Lease: parsing time
  ... as "2006-01-02T15:04:05.000000Z07:00": ...` (a PATCH that produces one: 422 on `patch`).
- Validation (422, `Kind.group "name" is invalid: ...`, field paths and messages in the real
  format) of names, labels, Service type/ports/ingress IPs, Lease durations, ConfigMap keys,
  EndpointSlice addressType/addresses, Event involvedObject.namespace, Secret keys/base64/size/type
  (immutable), Deployment selector (required, matching the template's labels, immutable), replicas,
  containers and restartPolicy, and PodDisruptionBudget selector and minAvailable/maxUnavailable.
- delete: Services and Namespaces return the object, the other kinds a Success Status;
  DeleteOptions preconditions (uid, resourceVersion) give 409. Deleting a Namespace deletes the
  objects in it (what the namespace controller does, here synchronously).
  deletecollection (DELETE on a collection) with selectors.
- list: kind `ServiceList` etc., metadata.resourceVersion, items without kind/apiVersion, ordered
  by etcd key; labelSelector (=, ==, !=, in, notin, exists, !exists), fieldSelector (=, ==, != on
  the fields the real server supports for each kind, 400 for others); limit/continue pagination
  over a consistent snapshot with remainingItemCount; 410 Expired for a compacted continue token;
  resourceVersionMatch=Exact; lists across all namespaces (/api/v1/services).
- PATCH: merge (RFC 7386), strategic merge (merge keys: Service spec.ports by port, conditions
  and Node addresses by type, metadata.ownerReferences by uid, finalizers merged as sets; other
  lists replaced; `$patch: delete|replace`, `$deleteFromPrimitiveList/`, `$retainKeys`), JSON
  patch (RFC 6902; a failed test or bad path is 422); metadata.resourceVersion in a patch body is a
  precondition (409 when stale); server-side apply is 415.
- dryRun=All: validated and answered, nothing stored.
- watch (watch=true|1): chunked newline-delimited JSON events ADDED/MODIFIED/DELETED/BOOKMARK/ERROR;
  without resourceVersion (or "0") the current objects first as ADDED; resume after a
  resourceVersion by replaying the retained history; older than the history window (`history=`,
  `compact()`) -> ERROR event with a 410 Expired Status; selectors applied to events, an object
  leaving/entering the selection sent as DELETED/ADDED; allowWatchBookmarks -> BOOKMARK every
  `bookmark_interval` seconds carrying the newest resourceVersion; sendInitialEvents=true ends the
  initial ADDED events with a bookmark annotated k8s.io/initial-events-end; timeoutSeconds.
  Watchers are woken by a Condition, and every watch ends when the server stops.
- Errors are metav1 Status bodies (kind Status, status Failure, message, reason, details, code)
  with the real messages; 429/5xx faults carry Retry-After.
- Optional bearer token: with `token=`, requests without it get 401 Unauthorized.

Test-only surface: a request log (`requests()`, `writes()`, `clear_log()`), fault injection
(`fail_next()`), direct state access (`put_object()`, `get_object()`, `list_objects()`,
`delete_object()`), history compaction (`compact()`).

Not reproduced: managedFields, server-side apply, graceful deletion and finalizers (objects are
deleted at once), admission webhooks, RBAC, protobuf/CBOR, the `kubernetes` Service in `default`,
fieldValidation=Strict (unknown fields are kept, not rejected).
"""

# The implementation lives in tests/fakes/kubeapi/, one module per concern: kinds, errors
# (metav1.Status), validation, patches, selectors, store (objects, resourceVersions, history),
# verbs (create/update/patch/delete), watch, server (HTTP, routing, request log, faults).
from tests.fakes.kubeapi.kinds import KINDS, Obj
from tests.fakes.kubeapi.server import FakeKube, Fault, LoggedRequest

__all__ = ["KINDS", "FakeKube", "Fault", "LoggedRequest", "Obj"]
