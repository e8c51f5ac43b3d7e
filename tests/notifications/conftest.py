from tests.integration.conftest import database_url, db, pg_options, pg_schema, raw_db  # noqa: F401
