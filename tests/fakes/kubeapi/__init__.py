"""The fake Kubernetes API server, by concern; import FakeKube from tests.fakes.kube_api."""
