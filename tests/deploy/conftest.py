"""Real Redis and PostgreSQL for the deployment tests, as for the cluster tests."""

from tests.cluster.conftest import redis_prefix, redis_url  # noqa: F401
from tests.integration.conftest import database_url, pg_options, pg_schema  # noqa: F401
