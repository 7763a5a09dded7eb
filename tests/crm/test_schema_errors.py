"""The published schema tells the truth: error answers, nullable fields, enums, bounds.

The schemathesis suite (tests/contract, `make test-schema`) checks the API against the
schema; these tests pin the schema itself, in the default suite.
"""

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_the_published_schema_validates_without_warnings(db, tmp_path):
    out = tmp_path / "schema.yaml"

    # --fail-on-warn: an error or a warning while generating exits non-zero (SystemExit).
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    assert yaml.safe_load(out.read_text())["paths"]


def test_every_operation_documents_the_errors_it_can_answer(schema):
    for label, operation in operations(schema):
        method, path = label.split(" ", 1)
        parameters = operation.get("parameters", [])
        documented = set(operation["responses"])
        expected = set()
        if "requestBody" in operation:
            expected |= {"400", "415"}
        if any(p["in"] in ("query", "header") for p in parameters):
            expected.add("400")
        if {} not in operation.get("security", [{}]):
            expected |= {"401", "403"}
        if "{" in path:
            expected.add("404")
        if method == "DELETE":
            expected.add("409")
        assert expected <= documented, (label, sorted(expected - documented))


def test_error_answers_have_a_json_body(schema):
    for label, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status.startswith("4"):
                assert "application/json" in response.get("content", {}), (label, status)


def test_throttled_and_conflicting_operations_say_so(schema):
    paths = schema["paths"]

    for path in ("/api/intake/forms/{slug}/", "/api/intake/integrations/{id}/contacts/"):
        assert "429" in paths[path]["post"]["responses"]
    assert "429" not in paths["/api/contacts/"]["get"]["responses"]
    # the Idempotency-Key can be reused for a different request
    assert "409" in paths["/api/contacts/{id}/marketing-status/"]["post"]["responses"]
    assert "409" in paths["/api/workflow-runs/{id}/approve/"]["post"]["responses"]
    assert "409" in paths["/api/workflow-runs/{id}/reject/"]["post"]["responses"]
    # public endpoints need no credentials: no 401/403
    assert {"401", "403"}.isdisjoint(paths["/api/intake/external-forms/"]["post"]["responses"])


def test_nullable_fields_are_declared_nullable(schema):
    components = schema["components"]["schemas"]

    assert components["MarketingEmail"]["properties"]["sent_by"]["nullable"] is True
    reason = components["Contact"]["properties"]["marketing_reason_type"]
    assert reason["nullable"] is True
    assert "" not in components["StatusSourceTypeEnum"]["enum"]


def test_the_api_reads_json_only(schema):
    bodies = {
        label: set(operation["requestBody"]["content"])
        for label, operation in operations(schema)
        if "requestBody" in operation
    }

    assert bodies.pop("POST /api/imports/") == {"multipart/form-data"}
    assert all(types == {"application/json"} for types in bodies.values()), bodies


def test_enums_and_bounds_say_what_the_api_accepts(schema):
    components = schema["components"]["schemas"]
    paths = schema["paths"]

    communication_type = components["CommunicationRequest"]["properties"]["type"]
    assert communication_type["allOf"] == [{"$ref": "#/components/schemas/CommunicationTypeEnum"}]
    assert "marketing" not in components["CommunicationTypeEnum"]["enum"]
    savings = {p["name"]: p for p in paths["/api/workflows/savings/"]["get"]["parameters"]}
    assert savings["unengaged_days"]["schema"]["minimum"] == 1
    assert savings["unengaged_days"]["schema"]["maximum"] == 3650
    contacts = {p["name"]: p for p in paths["/api/contacts/"]["get"]["parameters"]}
    assert contacts["page_size"]["schema"]["minimum"] == 1
    assert "format" not in {
        p["name"] for p in paths["/api/contacts/export/"]["get"].get("parameters", [])
    }
    runs = {p["name"] for p in paths["/api/workflow-runs/"]["get"]["parameters"]}
    assert {"workflow", "status"} <= runs


def test_json_fields_have_their_shape(schema):
    components = schema["components"]["schemas"]

    workflow = components["WorkflowRequest"]["properties"]
    assert workflow["criteria"]["type"] == "object"
    assert workflow["actions"]["type"] == "array"
    contact_filter = components["BulkMarketingStatusChangeRequest"]["properties"]["filter"]
    assert contact_filter["additionalProperties"] is False
    assert contact_filter["properties"]["pending"]["type"] == "boolean"
    assert contact_filter["properties"]["lead_score_min"]["type"] == "integer"
    assert "lead" in contact_filter["properties"]["lifecycle_stage"]["enum"]
