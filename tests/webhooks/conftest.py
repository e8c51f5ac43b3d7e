from tests.integration.conftest import database_url, pg_options, pg_schema  # noqa: F401
