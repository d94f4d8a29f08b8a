"""Results: the Parquet schema, the store that writes it atomically, and DuckDB queries over it."""
