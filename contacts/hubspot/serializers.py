"""The shapes of the HubSpot-compatible API: request bodies in, HubSpot's objects out.

Requests are checked by DRF serializers (a bad shape is a 400 in HubSpot's form, see
contacts.hubspot.errors); a contact is rendered as HubSpot's `SimplePublicObject`
(`{"id", "properties", "createdAt", "updatedAt", "archived"}`), pages and batch answers
as the official client's models expect them. Field names are HubSpot's JSON keys, so
some are camelCase.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from rest_framework import serializers

from contacts.hubspot.mapping import (
    PROPERTIES,
    HubSpotProperty,
    contact_properties,
    hubspot_datetime,
)
from contacts.hubspot.search import (
    MAX_QUERY_LENGTH,
    SEARCH_DEFAULT_LIMIT,
    SEARCH_MAX_LIMIT,
    SEARCH_WINDOW,
)
from contacts.hubspot.selectors import ID_PROPERTIES, ID_PROPERTY
from contacts.models import Contact

BATCH_MAX_INPUTS = 100  # HubSpot's limit for every batch endpoint
LIST_MAX_LIMIT = 100
LIST_DEFAULT_LIMIT = 10
MAX_VALUE_LENGTH = 65_536  # HubSpot's limit on a property value


class PropertyValueField(serializers.Field):
    """A property's value as sent: a string (HubSpot's format), or a JSON number, boolean or
    null, which the property table reads as their text."""

    def to_internal_value(self, data):
        if data is not None and not isinstance(data, str | int | float | bool):
            self.fail("invalid")
        if isinstance(data, str) and len(data) > MAX_VALUE_LENGTH:
            raise serializers.ValidationError(f"At most {MAX_VALUE_LENGTH} characters.")
        if isinstance(data, str) and "\x00" in data:
            raise serializers.ValidationError("A value may not contain NUL characters.")
        return data

    default_error_messages = {
        "invalid": "A property value is a string, a number, true, false or null."
    }


def _properties_field(**kwargs):
    return serializers.DictField(child=PropertyValueField(allow_null=True), **kwargs)


def _names_field(**kwargs):
    return serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=len(PROPERTIES) * 10, **kwargs
    )


def _id_property_field(**kwargs):
    return serializers.ChoiceField(
        choices=ID_PROPERTIES,
        error_messages={
            "invalid_choice": '"{input}" is not a unique property: use hs_object_id or email.'
        },
        **kwargs,
    )


class ObjectInputForCreate(serializers.Serializer):
    properties = _properties_field()
    associations = serializers.ListField(
        required=False,
        allow_null=True,
        max_length=0,
        error_messages={
            "max_length": "Associations are not supported: Marketable has no other CRM objects."
        },
    )


class ObjectInput(serializers.Serializer):
    properties = _properties_field()


class MergeInput(serializers.Serializer):
    """HubSpot's `PublicMergeInput`: the ids as strings, the first one stays."""

    primaryObjectId = serializers.CharField(max_length=100)  # noqa: N815
    objectIdToMerge = serializers.CharField(max_length=100)  # noqa: N815


class BatchInputItem(serializers.Serializer):
    id = serializers.CharField(max_length=254)
    idProperty = _id_property_field(required=False, allow_null=True)
    objectWriteTraceId = serializers.CharField(required=False, allow_null=True, max_length=200)


class BatchUpdateItem(BatchInputItem):
    properties = _properties_field()


class BatchUpsertItem(BatchUpdateItem):
    idProperty = serializers.ChoiceField(
        choices=["email"],
        error_messages={
            "invalid_choice": "Upserts find contacts by email: give idProperty email.",
            "required": "Upserts find contacts by email: give idProperty email.",
        },
    )


class BatchCreateItem(ObjectInputForCreate):
    objectWriteTraceId = serializers.CharField(required=False, allow_null=True, max_length=200)


def _batch(item: serializers.Serializer, **kwargs) -> serializers.ListField:
    return serializers.ListField(child=item, max_length=BATCH_MAX_INPUTS, **kwargs)


class BatchCreateInput(serializers.Serializer):
    inputs = _batch(BatchCreateItem())


class BatchReadInput(serializers.Serializer):
    inputs = _batch(BatchInputItem())
    properties = _names_field(required=False, allow_null=True)
    propertiesWithHistory = _names_field(required=False, allow_null=True)
    idProperty = _id_property_field(required=False, allow_null=True)


class BatchUpdateInput(serializers.Serializer):
    inputs = _batch(BatchUpdateItem())


class BatchUpsertInput(serializers.Serializer):
    inputs = _batch(BatchUpsertItem())


class BatchArchiveInput(serializers.Serializer):
    inputs = _batch(BatchInputItem())


class SearchInput(serializers.Serializer):
    filterGroups = serializers.JSONField(required=False, default=list)
    sorts = serializers.ListField(
        child=serializers.JSONField(), required=False, allow_null=True, default=list
    )
    query = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, default="", max_length=MAX_QUERY_LENGTH
    )
    properties = _names_field(required=False, allow_null=True)
    limit = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=SEARCH_DEFAULT_LIMIT,
        min_value=1,
        max_value=SEARCH_MAX_LIMIT,
    )
    after = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=0,
        min_value=0,
        max_value=SEARCH_WINDOW - 1,
        error_messages={
            "max_value": f"Search results stop at {SEARCH_WINDOW:,}: narrow the filters "
            "(e.g. hs_object_id GT <last id>, sorted by hs_object_id) to read further."
        },
    )


class ListQuery(serializers.Serializer):
    """The query string of a contacts list (GET /crm/v3/objects/contacts)."""

    limit = serializers.IntegerField(
        required=False, default=LIST_DEFAULT_LIMIT, min_value=1, max_value=LIST_MAX_LIMIT
    )
    after = serializers.RegexField(r"^[0-9]{1,18}$", required=False, default="0")
    archived = serializers.BooleanField(required=False, default=False)


class ReadQuery(serializers.Serializer):
    """The query string of a read of one contact."""

    archived = serializers.BooleanField(required=False, default=False)
    idProperty = _id_property_field(required=False, default=ID_PROPERTY)


def query_params(request) -> dict:
    """The query string with HubSpot's repeated `properties` (and comma lists) joined."""
    params = {key: request.query_params.get(key) for key in request.query_params}
    names = []
    for value in request.query_params.getlist("properties"):
        names += [name.strip() for name in value.split(",") if name.strip()]
    params["properties"] = names
    return params


def contact_object(contact: Contact, names: list[str], now: dt.datetime) -> dict:
    """A contact as HubSpot's `SimplePublicObject`."""
    return {
        "id": str(contact.pk),
        "properties": contact_properties(contact, names, now),
        "createdAt": hubspot_datetime(contact.created_at),
        "updatedAt": hubspot_datetime(contact.updated_at),
        "archived": False,
    }


def batch_response(*, results: list[dict], errors: list[dict], started_at: dt.datetime) -> dict:
    """A batch answer (`BatchResponseSimplePublicObject[WithErrors]`)."""
    body = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": hubspot_datetime(started_at),
        "completedAt": hubspot_datetime(timezone.now()),
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    return body


def property_definition(prop: HubSpotProperty, order: int) -> dict:
    """A property as HubSpot's properties API describes it (`Property`)."""
    return {
        "name": prop.name,
        "label": prop.label,
        "type": prop.type,
        "fieldType": prop.field_type,
        "description": prop.description,
        "groupName": prop.group,
        "options": [
            {"label": o.label, "value": o.value, "displayOrder": i, "hidden": o.hidden}
            for i, o in enumerate(prop.options)
        ],
        "displayOrder": order,
        "calculated": prop.calculated,
        "externalOptions": False,
        "hasUniqueValue": prop.unique,
        "hidden": False,
        "hubspotDefined": True,
        "formField": prop.writable and not prop.status,
        "archived": False,
        "modificationMetadata": {
            "archivable": False,
            "readOnlyDefinition": True,
            "readOnlyValue": not prop.writable,
        },
    }
