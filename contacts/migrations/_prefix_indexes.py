"""What the prefix-index migrations (0024, 0025) share: building and dropping
PostgreSQL-only indexes on the contacts table, with their statistics.

Not a migration (Django's loader skips modules whose names start with "_")."""

# Values ANALYZE keeps of each prefix expression (PostgreSQL's default is 100); migration
# 0024 says why.
STATISTICS = 3000


def replace_indexes(
    schema_editor, build: dict[str, str], drop: dict[str, str], statistics: int | None = None
) -> None:
    """Build each index of `build` (name: what follows `ON contacts_contact`), give each of
    its columns `statistics` values, drop each of `drop`, and ANALYZE the table so the
    planner has the new expressions' statistics from the start. SQLite: nothing."""
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in build.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON contacts_contact {definition}")
        if statistics:
            with schema_editor.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT indnatts FROM pg_index WHERE indexrelid = %s::regclass", [name]
                )
                columns = cursor.fetchone()[0]
            for column in range(1, columns + 1):
                schema_editor.execute(
                    f"ALTER INDEX {name} ALTER COLUMN {column} SET STATISTICS {statistics}"
                )
    for name in drop:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
    schema_editor.execute("ANALYZE contacts_contact")
