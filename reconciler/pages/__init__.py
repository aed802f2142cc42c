"""HTML pages (pure): the controller's status page and the plan as a CI artifact.

Everything here renders plain values to text: no I/O, no network, nothing but the standard
library's ``html`` escaping. The controller hands in what it already holds after a reconcile
(the status document, the DesiredState, the LiveState and the Plan); a page view reads nothing
else. Markup is escaped by default (:mod:`reconciler.pages.markup`), the page carries no
script and no external asset, and its one stylesheet is allowed by hash in a strict
Content-Security-Policy (:mod:`reconciler.pages.style`).
"""
