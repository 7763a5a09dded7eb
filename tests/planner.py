"""For the tests of crm.planner's time limits on PostgreSQL: a statement made slow on
purpose, and the settings a block must leave as they were."""

from django.db import connection

# An uncorrelated subquery runs once per statement: each statement with this condition
# takes a tenth of a second more, past a limit of 20 ms.
SLOW_STATEMENT = "(SELECT pg_sleep(0.1)) IS NOT NULL"


def planner_defaults() -> tuple[str, str, str]:
    """The connection's statement_timeout, enable_indexscan and random_page_cost as they
    stand."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('statement_timeout'), current_setting('enable_indexscan'), "
            "current_setting('random_page_cost')"
        )
        return cursor.fetchone()
