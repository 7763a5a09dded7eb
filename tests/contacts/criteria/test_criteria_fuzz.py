"""Generated junk never crashes the criteria: it is refused with a CriteriaError, or it
validates and then runs on the database without an error."""

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts.criteria import (
    FIELDS,
    OPERATORS,
    CriteriaError,
    criteria_queryset,
    criteria_validate,
)

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["2026-01-01", "1767225600000", "-5", "0", "3", "lead", "*", "a*b", "%_\\"])
)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
names = (
    st.sampled_from(sorted(FIELDS))
    | st.sampled_from(["lifecyclestage", "id__in", ""])
    | st.text(max_size=8)
)
filters = st.fixed_dictionaries(
    {"propertyName": names | junk, "operator": st.sampled_from(OPERATORS) | junk},
    optional={
        "value": junk,
        "highValue": junk,
        "values": junk,
        "eventType": st.sampled_from(["email_click", "nope"]) | junk,
        "withinDays": junk,
        "extra": junk,
    },
)
trees = (
    st.fixed_dictionaries(
        {
            "filterGroups": st.lists(
                st.fixed_dictionaries({"filters": st.lists(filters, max_size=3)}), max_size=3
            )
        }
    )
    | junk
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=trees)
def test_junk_is_refused_or_runs(db, tree):
    try:
        criteria_validate(tree)
    except CriteriaError as exc:
        assert exc.errors
        for issue in exc.errors:
            assert issue.message
        return
    criteria_queryset(tree, now=NOW).count()
