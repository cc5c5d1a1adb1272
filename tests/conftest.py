import os

from hypothesis import HealthCheck, settings

# Property tests run a bounded number of examples in `make test`; `make fuzz` raises it.
settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile("fuzz" if os.environ.get("VEIL_FUZZ_SECONDS") else "default")
