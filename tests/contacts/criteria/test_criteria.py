"""Criteria: validation errors, HubSpot aliases, the documented semantics, one SQL query."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from jsonschema import Draft202012Validator

from contacts.criteria import (
    ALIASES,
    CRITERIA_JSON_SCHEMA,
    FIELDS,
    MAX_GROUPS,
    MAX_IN_VALUES,
    OPERATORS,
    CriteriaError,
    criteria_q,
    criteria_queryset,
    criteria_validate,
)
from contacts.engagement.models import EngagementEvent
from contacts.models import (
    Contact,
    Source,
)

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)


def tree(*filters, groups=None):
    if groups is not None:
        return {"filterGroups": [{"filters": list(g)} for g in groups]}
    return {"filterGroups": [{"filters": list(filters)}]}


def f(name, operator, **keys):
    return {"propertyName": name, "operator": operator, **keys}


def errors_of(bad) -> list[dict]:
    with pytest.raises(CriteriaError) as caught:
        criteria_validate(bad)
    return caught.value.as_list()


def only_error(bad) -> dict:
    errors = errors_of(bad)
    assert len(errors) == 1, errors
    return errors[0]


def emails(t, now=NOW) -> list[str]:
    return sorted(criteria_queryset(t, now=now).values_list("email", flat=True))


@pytest.fixture
def people(db):
    """Five contacts covering blank and NULL values, sources, events."""
    form = Source.objects.create(name="Web form", kind="form")
    sf = Source.objects.create(name="Salesforce", kind="integration")
    other = Source.objects.create(name="Zapier", kind="integration")
    made = Contact.objects.bulk_create(
        [
            Contact(
                email="ann@acme.io",
                company="Acme Widgets Inc",
                lifecycle_stage="mql",
                lead_status="open",
                lead_score=12,
                last_engaged_at=NOW - dt.timedelta(days=2),
                source=form,
            ),
            Contact(
                email="bob@example.com",
                company="",
                lifecycle_stage="lead",
                lead_status="",
                lead_score=3,
                unsubscribed=True,
                source=sf,
            ),
            Contact(
                email="cy@sub.acme.io",
                company="acme",
                lifecycle_stage="customer",
                lead_status="unqualified",
                hard_bounced=True,
                source=other,
                marketing_status="marketing",
            ),
            Contact(
                email="di@acme.io",
                company="Widgets-Acme",
                lifecycle_stage="subscriber",
                lead_status="new",
                source=sf,
                marketing_status="marketing",
                marketing_until=NOW - dt.timedelta(seconds=1),  # pending date passed
            ),
            Contact(
                email="ed@xacme.io",
                company="ACME",
                lifecycle_stage="lead",
                lead_status="open",
                source=form,
                marketing_status="marketing",
                marketing_until=NOW + dt.timedelta(days=10),  # still marketing until then
            ),
        ]
    )
    by_email = {c.email: c for c in made}
    EngagementEvent.objects.bulk_create(
        [
            EngagementEvent(
                contact=by_email["ann@acme.io"],
                type="email_click",
                occurred_at=NOW - dt.timedelta(days=d),
            )
            for d in (1, 5, 29)
        ]
        + [
            EngagementEvent(
                contact=by_email["bob@example.com"],
                type="email_open",
                occurred_at=NOW - dt.timedelta(days=40),
            ),
            EngagementEvent(
                contact=by_email["ed@xacme.io"],
                type="email_click",
                occurred_at=NOW - dt.timedelta(days=30),
            ),
        ]
    )
    return {"form": form, "sf": sf, "other": other, **by_email}


# --- The JSON Schema and the registry ---


def test_the_json_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(CRITERIA_JSON_SCHEMA)


def test_every_field_allows_only_known_operators_and_every_alias_names_a_field():
    for spec in FIELDS.values():
        assert set(spec.operators) <= set(OPERATORS), spec.name
    assert set(ALIASES.values()) <= set(FIELDS)
    assert not set(ALIASES) & set(FIELDS)


# --- Validation errors name the group, filter, field and operator ---


def test_an_unknown_field_is_refused_with_its_place():
    error = only_error(tree(f("lead_score", "GT", value=1), f("shoe_size", "EQ", value="9")))

    assert error["group"] == 0
    assert error["filter"] == 1
    assert error["field"] == "shoe_size"
    assert error["operator"] == "EQ"
    assert error["code"] == "unknown_field"
    assert error["message"].startswith("Unknown field 'shoe_size'.")


@pytest.mark.parametrize(
    "name", ["source__kind", "id__in", "pk", "email__icontains", "marketing_until"]
)
def test_orm_lookups_and_unlisted_columns_are_unknown_fields(name):
    error = only_error(tree(f(name, "EQ", value="x")))

    assert (error["code"], error["field"]) == ("unknown_field", name)


def test_an_unknown_operator_is_refused_by_the_schema():
    error = only_error(tree(f("lead_score", "LIKE", value="1")))

    assert (error["group"], error["filter"], error["field"]) == (0, 0, "lead_score")
    assert error["code"] == "unknown_operator"
    assert error["message"].startswith("Unknown operator 'LIKE'")


def test_an_operator_the_field_does_not_allow_is_refused():
    error = only_error(tree(f("lead_score", "CONTAINS_TOKEN", value="1")))

    assert error["code"] == "operator_not_allowed"
    assert (error["field"], error["operator"]) == ("lead_score", "CONTAINS_TOKEN")
    assert error["message"] == (
        "CONTAINS_TOKEN is not allowed for lead_score; "
        "use one of EQ, NEQ, IN, NOT_IN, LT, LTE, GT, GTE, BETWEEN."
    )


@pytest.mark.parametrize(
    ("bad", "key", "code"),
    [
        (f("lead_score", "GT", value="ten"), "value", "bad_value"),
        (f("lead_score", "GT", value=True), "value", "bad_value"),
        (f("lead_score", "GT", value=2**40), "value", "bad_value"),
        (f("lifecycle_stage", "EQ", value="prospectish"), "value", "bad_value"),
        (f("lifecycle_stage", "IN", values=["lead", 7]), "values", "bad_value"),
        (f("unsubscribed", "EQ", value="yes"), "value", "bad_value"),
        (f("created_at", "GT", value="yesterday"), "value", "bad_value"),
        (f("company", "EQ", value="   "), "value", "bad_value"),
        (f("company", "EQ", value="a\x00b"), "value", "bad_value"),  # PostgreSQL refuses NUL
        (f("company", "CONTAINS_TOKEN", value="**"), "value", "bad_value"),
        (f("email_domain", "EQ", value="a@b.com"), "value", "bad_value"),
        (f("last_engaged", "WITHIN_LAST_DAYS", value=0), "value", "bad_value"),
        (
            f("last_engaged", "WITHIN_LAST_DAYS", value=30, eventType="tweet"),
            "eventType",
            "bad_value",
        ),
        (f("engagement_count", "GTE", value=-1), "value", "bad_value"),
        (f("engagement_count", "GTE", value=1, withinDays="a month"), "withinDays", "bad_value"),
        (f("lead_score", "BETWEEN", value=1), "highValue", "missing_value"),
        (f("lead_score", "BETWEEN", value=5, highValue=1), "highValue", "bad_range"),
        (f("lead_score", "EQ", values=[1]), "value", "missing_value"),
        (f("lead_score", "IN", value=1), "values", "missing_value"),
        (f("lead_status", "HAS_PROPERTY", value="open"), "value", "unexpected_value"),
        (f("company", "EQ", value="Acme", eventType="email_open"), "eventType", "unexpected_key"),
        (f("last_engaged", "HAS_PROPERTY", withinDays=3), "withinDays", "unexpected_key"),
    ],
)
def test_bad_values_are_refused_naming_the_key(bad, key, code):
    errors = errors_of(tree(bad))

    assert (key, code) in {(e["key"], e["code"]) for e in errors}
    assert {(e["group"], e["filter"], e["field"], e["operator"]) for e in errors} == {
        (0, 0, bad["propertyName"], bad["operator"])
    }


def test_extra_keys_are_refused_at_every_level():
    bad = {
        "filterGroups": [{"filters": [f("email", "EQ", value="a@b.c", sql="1=1")], "note": "x"}],
        "sorts": [],
    }

    errors = errors_of(bad)

    assert [(e["group"], e["filter"], e["code"]) for e in errors] == [
        (None, None, "unknown_key"),
        (0, None, "unknown_key"),
        (0, 0, "unknown_key"),
    ]
    assert errors[2]["message"].startswith("Unknown key 'sql'")


def test_an_empty_group_is_invalid_and_all_problems_are_reported_at_once():
    bad = tree(groups=[[f("nope", "EQ", value=1)], [], [f("lead_score", "GT", value="x")]])

    errors = errors_of(bad)

    assert [(e["group"], e["filter"], e["code"]) for e in errors] == [
        (0, 0, "unknown_field"),
        (1, None, "empty_group"),
        (2, 0, "bad_value"),
    ]


def test_limits_on_groups_filters_and_in_values():
    one = f("lead_score", "GT", value=1)
    assert only_error(tree(groups=[[one]] * (MAX_GROUPS + 1)))["code"] == "too_many"
    assert only_error(tree(*[one] * 26))["code"] == "too_many"
    many = f("lead_score", "IN", values=list(range(MAX_IN_VALUES + 1)))
    assert only_error(tree(many))["code"] == "too_many"
    criteria_validate(tree(f("lead_score", "IN", values=list(range(MAX_IN_VALUES)))))


@pytest.mark.parametrize("bad", [None, [], "x", {"filterGroups": "all"}, {"filterGroups": [[]]}])
def test_malformed_trees_are_refused_not_crashed_on(bad):
    assert errors_of(bad)


def test_errors_adapt_to_django_forms_and_drf():
    with pytest.raises(CriteriaError) as caught:
        criteria_validate(tree(f("lead_score", "GT", value="ten")))

    validation_error = caught.value.as_validation_error()
    assert isinstance(validation_error, ValidationError)
    assert validation_error.messages == [
        "Group 1, filter 1 (Lead score is more than): the value is not valid (expected a whole "
        "number, got 'ten')."
    ]
    assert caught.value.as_dict() == {
        "criteria": [
            {
                "group": 0,
                "filter": 0,
                "field": "lead_score",
                "operator": "GT",
                "key": "value",
                "code": "bad_value",
                "message": "value: expected a whole number, got 'ten'.",
            }
        ]
    }


# --- HubSpot's names and values ---


def test_a_hubspot_filter_validates_to_our_fields_and_values():
    hubspot = tree(
        f("lifecyclestage", "IN", values=["lead", "marketingqualifiedlead"]),
        f("hs_lead_status", "EQ", value="OPEN"),
        f("hs_marketable_status", "EQ", value="true"),
        f("firstname", "HAS_PROPERTY"),
        f("lastname", "NOT_HAS_PROPERTY"),
        f("createdate", "GTE", value="1767225600000"),
        f("hs_email_optout", "EQ", value="false"),
        f("hs_email_hard_bounce_reason_enum", "NOT_HAS_PROPERTY"),
        f("hubspotscore", "BETWEEN", value="10", highValue="20"),
        f("hs_object_source", "IN", values=["IMPORT", "CRM_UI"]),
        f("hs_email_domain", "EQ", value="Acme.io"),
    )

    canonical = criteria_validate(hubspot).as_json()["filterGroups"][0]["filters"]

    assert canonical == [
        f("lifecycle_stage", "IN", values=["lead", "mql"]),
        f("lead_status", "EQ", value="open"),
        f("marketing_status", "EQ", value="marketing"),
        f("first_name", "HAS_PROPERTY"),
        f("last_name", "NOT_HAS_PROPERTY"),
        f("created_at", "GTE", value="2026-01-01T00:00:00+00:00"),
        f("unsubscribed", "EQ", value=False),
        f("hard_bounced", "NOT_HAS_PROPERTY"),
        f("lead_score", "BETWEEN", value=10, highValue=20),
        f("source_kind", "IN", values=["import", "manual"]),
        f("email_domain", "EQ", value="acme.io"),
    ]


def test_hubspot_names_select_the_same_contacts_as_ours(people):
    ours = tree(f("lifecycle_stage", "EQ", value="mql"), f("lead_score", "GT", value=10))
    theirs = tree(
        f("lifecyclestage", "EQ", value="marketingqualifiedlead"),
        f("hubspotscore", "GT", value="10"),
    )

    assert emails(theirs) == emails(ours) == ["ann@acme.io"]


# --- Semantics (docs/ARCHITECTURE.md, "Criteria") ---


def test_an_empty_tree_matches_nothing_without_a_query(people, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert criteria_queryset({"filterGroups": []}, now=NOW).count() == 0


def test_groups_are_ored_and_filters_anded(people):
    t = tree(
        groups=[
            [f("lifecycle_stage", "EQ", value="lead"), f("unsubscribed", "EQ", value=True)],
            [f("lifecycle_stage", "EQ", value="customer")],
        ]
    )

    assert emails(t) == ["bob@example.com", "cy@sub.acme.io"]


def test_negative_operators_include_blank_and_null_values(people):
    assert emails(tree(f("lead_status", "NEQ", value="open"))) == [
        "bob@example.com",
        "cy@sub.acme.io",
        "di@acme.io",
    ]
    assert emails(tree(f("lead_status", "NOT_IN", values=["open", "new"]))) == [
        "bob@example.com",
        "cy@sub.acme.io",
    ]
    assert emails(tree(f("last_engaged_at", "NOT_WITHIN_LAST_DAYS", value=7))) == [
        "bob@example.com",
        "cy@sub.acme.io",
        "di@acme.io",
        "ed@xacme.io",
    ]
    assert emails(tree(f("last_engaged_at", "LT", value=NOW.isoformat()))) == ["ann@acme.io"]


def test_text_equality_ignores_case(people):
    assert emails(tree(f("company", "EQ", value="ACME"))) == ["cy@sub.acme.io", "ed@xacme.io"]
    assert emails(tree(f("company", "IN", values=["acme widgets inc", "nothing"]))) == [
        "ann@acme.io"
    ]
    assert emails(tree(f("email", "EQ", value="  Ann@ACME.io "))) == ["ann@acme.io"]


def test_contains_token_matches_whole_space_separated_tokens_with_star_wildcards(people):
    assert emails(tree(f("company", "CONTAINS_TOKEN", value="acme"))) == [
        "ann@acme.io",
        "cy@sub.acme.io",
        "ed@xacme.io",
    ]
    assert emails(tree(f("company", "CONTAINS_TOKEN", value="*acme"))) == [
        "ann@acme.io",
        "cy@sub.acme.io",
        "di@acme.io",
        "ed@xacme.io",
    ]
    assert emails(tree(f("company", "CONTAINS_TOKEN", value="widgets inc"))) == ["ann@acme.io"]
    assert emails(tree(f("email", "CONTAINS_TOKEN", value="*@acme.io"))) == [
        "ann@acme.io",
        "di@acme.io",
    ]
    assert emails(tree(f("company", "NOT_CONTAINS_TOKEN", value="acme"))) == [
        "bob@example.com",
        "di@acme.io",
    ]


def test_like_wildcards_in_values_are_literal(people):
    assert emails(tree(f("company", "CONTAINS_TOKEN", value="acm_"))) == []
    assert emails(tree(f("company", "CONTAINS_TOKEN", value="%"))) == []
    assert emails(tree(f("email_domain", "EQ", value="_cme.io"))) == []


def test_email_domain_is_the_part_after_the_at(people):
    assert emails(tree(f("email_domain", "EQ", value="acme.io"))) == ["ann@acme.io", "di@acme.io"]
    assert emails(tree(f("email_domain", "IN", values=["@sub.acme.io", "example.com"]))) == [
        "bob@example.com",
        "cy@sub.acme.io",
    ]


def test_marketing_status_is_the_effective_status_now(people):
    marketing = tree(f("marketing_status", "EQ", value="marketing"))

    assert emails(marketing) == ["cy@sub.acme.io", "ed@xacme.io"]
    assert set(criteria_queryset(marketing, now=NOW)) == set(Contact.objects.billable(NOW))
    assert emails(tree(f("hs_marketable_status", "EQ", value=False))) == [
        "ann@acme.io",
        "bob@example.com",
        "di@acme.io",
    ]


def test_source_facts(people):
    sf = people["sf"]
    assert emails(tree(f("source_kind", "EQ", value="integration"))) == [
        "bob@example.com",
        "cy@sub.acme.io",
        "di@acme.io",
    ]
    assert emails(tree(f("source_name", "EQ", value="web form"))) == ["ann@acme.io", "ed@xacme.io"]
    assert emails(tree(f("source_id", "EQ", value=sf.pk))) == ["bob@example.com", "di@acme.io"]
    assert emails(tree(f("source_integration", "EQ", value="salesforce"))) == [
        "bob@example.com",
        "di@acme.io",
    ]
    assert emails(tree(f("source_integration", "IN", values=[str(people["other"].pk)]))) == [
        "cy@sub.acme.io"
    ]
    assert emails(tree(f("source_integration", "EQ", value="Web form"))) == []
    assert emails(tree(f("source_integration", "NOT_HAS_PROPERTY"))) == [
        "ann@acme.io",
        "ed@xacme.io",
    ]


def test_hard_bounced_has_property_means_bounced(people):
    assert emails(tree(f("hs_email_hard_bounce_reason_enum", "HAS_PROPERTY"))) == ["cy@sub.acme.io"]


def test_last_engaged_looks_at_engagement_events_in_the_window_ending_now(people):
    assert emails(tree(f("last_engaged", "WITHIN_LAST_DAYS", value=30))) == [
        "ann@acme.io",
        "ed@xacme.io",  # exactly 30 days ago: the window includes its start
    ]
    assert (
        emails(tree(f("last_engaged", "WITHIN_LAST_DAYS", value=30, eventType="email_open"))) == []
    )
    assert emails(tree(f("last_engaged", "NOT_WITHIN_LAST_DAYS", value=30))) == [
        "bob@example.com",
        "cy@sub.acme.io",
        "di@acme.io",
    ]
    assert emails(tree(f("last_engaged", "HAS_PROPERTY", eventType="email_open"))) == [
        "bob@example.com"
    ]
    # A later `now` moves the window: Ann's events are then all older than 7 days.
    later = NOW + dt.timedelta(days=10)
    assert emails(tree(f("last_engaged", "WITHIN_LAST_DAYS", value=7)), now=later) == []


def test_engagement_count_counts_events_of_a_type_in_a_window(people):
    def count(operator, value, **keys):
        return emails(
            tree(f("engagement_count", operator, value=value, eventType="email_click", **keys))
        )

    assert count("GTE", 3, withinDays=30) == ["ann@acme.io"]
    assert count("GTE", 3, withinDays=7) == []
    assert count("EQ", 2, withinDays=7) == ["ann@acme.io"]
    assert count("EQ", 0, withinDays=30) == ["bob@example.com", "cy@sub.acme.io", "di@acme.io"]
    assert count("LT", 1) == ["bob@example.com", "cy@sub.acme.io", "di@acme.io"]
    assert emails(tree(f("engagement_count", "BETWEEN", value=1, highValue=1, withinDays=60))) == [
        "bob@example.com",
        "ed@xacme.io",
    ]


def test_dates_accept_iso_dates_datetimes_and_epoch_milliseconds(people):
    Contact.objects.filter(email="ann@acme.io").update(
        created_at=dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    )
    Contact.objects.exclude(email="ann@acme.io").update(
        created_at=dt.datetime(2026, 2, 10, tzinfo=dt.UTC)
    )

    assert emails(tree(f("createdate", "LT", value="2026-02-01"))) == ["ann@acme.io"]
    assert emails(tree(f("created_at", "LT", value="2026-02-01T00:00:00+01:00"))) == ["ann@acme.io"]
    assert emails(tree(f("created_at", "LT", value=1769904000000))) == ["ann@acme.io"]
    assert len(emails(tree(f("created_at", "WITHIN_LAST_DAYS", value=70)))) == 5
    assert emails(tree(f("created_at", "WITHIN_LAST_DAYS", value=40))) == [
        "bob@example.com",
        "cy@sub.acme.io",
        "di@acme.io",
        "ed@xacme.io",
    ]


# --- One SQL statement ---


def test_every_field_and_operator_compiles_into_one_query(people, django_assert_num_queries):
    t = tree(
        groups=[
            [
                f("lifecycle_stage", "IN", values=["lead", "mql"]),
                f("company", "CONTAINS_TOKEN", value="acme*"),
                f("email_domain", "NOT_IN", values=["example.com"]),
                f("marketing_status", "NEQ", value="marketing"),
                f("source_integration", "EQ", value="Salesforce"),
            ],
            [
                f("last_engaged", "NOT_WITHIN_LAST_DAYS", value=90, eventType="page_view"),
                f("engagement_count", "GTE", value=3, eventType="email_click", withinDays=30),
                f("last_engaged_at", "HAS_PROPERTY"),
            ],
        ]
    )

    with django_assert_num_queries(1):
        criteria_queryset(t, now=NOW).count()
    with django_assert_num_queries(1):
        list(criteria_queryset(t, now=NOW).values_list("pk", flat=True)[:20])


def test_engagement_facts_are_correlated_subqueries_not_python(people):
    t = tree(f("engagement_count", "GTE", value=3, eventType="email_click", withinDays=30))

    with CaptureQueriesContext(connection) as queries:
        assert criteria_queryset(t, now=NOW).count() == 1

    (sql,) = [q["sql"] for q in queries.captured_queries]
    assert sql.count("contacts_engagementevent") == 1
    assert "COUNT(" in sql.upper()


def test_criteria_q_composes_with_other_querysets(people):
    q = criteria_q(tree(f("lifecycle_stage", "EQ", value="lead")), now=NOW)

    assert sorted(
        Contact.objects.filter(q, unsubscribed=False).values_list("email", flat=True)
    ) == ["ed@xacme.io"]
    narrowed = criteria_queryset(
        tree(f("lifecycle_stage", "EQ", value="lead")),
        now=NOW,
        queryset=Contact.objects.filter(unsubscribed=True),
    )
    assert [c.email for c in narrowed] == ["bob@example.com"]
