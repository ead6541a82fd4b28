"""SQL persistence (SQLAlchemy Core): SQLite embedded, PostgreSQL for production."""
