"""The fake Cloudflare API, by concern; import FakeCloudflare from tests.fakes.cloudflare_api."""
