"""The HubSpot-compatible CRM v3 contacts API (a subset), mounted at /crm/v3/.

Interfaces only: each view checks the request's shape and permissions, calls a selector
or a service of this package, and renders HubSpot's shapes; every error is HubSpot's
(contacts.hubspot.errors). These endpoints are documented by HubSpot's own API reference
and docs/HUBSPOT.md, not in Marketable's OpenAPI schema.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.utils import timezone
from rest_framework import status as http
from rest_framework.exceptions import NotAuthenticated
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.hubspot.auth import ADD, CHANGE, DELETE, STATUS, VIEW, BearerTokenAuthentication
from contacts.hubspot.errors import (
    CORRELATION_HEADER,
    OBJECT_NOT_FOUND,
    HubSpotError,
    batch_error,
    conflict,
    correlation_id,
    hubspot_exception_handler,
    invalid_properties,
    missing_permissions,
    not_found,
    validation_error,
)
from contacts.hubspot.mapping import (
    DEFAULT_PROPERTIES,
    PROPERTIES,
    ContactWrite,
    field_problems,
    parse_write,
    properties_to_read,
)
from contacts.hubspot.search import SEARCH_DEFAULT_LIMIT, hubspot_contacts_search
from contacts.hubspot.selectors import (
    EMAIL_PROPERTY,
    ID_PROPERTY,
    contact_key,
    hubspot_contact_get,
    hubspot_contacts_by_keys,
    hubspot_contacts_page,
)
from contacts.hubspot.serializers import (
    BatchArchiveInput,
    BatchCreateInput,
    BatchReadInput,
    BatchUpdateInput,
    BatchUpsertInput,
    ListQuery,
    MergeInput,
    ObjectInput,
    ObjectInputForCreate,
    ReadQuery,
    SearchInput,
    batch_response,
    contact_object,
    property_definition,
    query_params,
)
from contacts.hubspot.services import (
    WriteOutcome,
    hubspot_contacts_archive,
    hubspot_contacts_create,
    hubspot_contacts_update,
    hubspot_contacts_upsert,
)
from contacts.merge.services import MergeError, MergeNotFound, contacts_merge
from contacts.status.results import LockedSourceError, MarketingNotPermitted

STATUS_PROPERTY = "hs_marketable_status"
OBJECT_TYPES = ("contacts", "0-1")  # HubSpot names contacts both ways


class HubSpotView(APIView):
    """Bearer-token auth, model permissions per method, HubSpot's error bodies."""

    schema = None  # HubSpot's API reference documents these; see docs/HUBSPOT.md
    authentication_classes = [BearerTokenAuthentication]
    permission_classes: list = []  # checked by check_permissions, with HubSpot's 403
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    required: dict[str, tuple[str, ...]] = {}

    def initial(self, request, *args, **kwargs):
        # One instant per request: every marketing property is read as of it.
        self.now = timezone.now()
        super().initial(request, *args, **kwargs)

    def get_exception_handler(self):
        return hubspot_exception_handler

    def check_permissions(self, request):
        if not (request.user and request.user.is_authenticated):
            raise NotAuthenticated()
        self.require(*self.required.get(request.method, ()))

    def require(self, *perms: str) -> None:
        missing = [perm for perm in perms if not self.request.user.has_perm(perm)]
        if missing:
            raise missing_permissions(missing)

    def require_status_permission(self, properties_list) -> None:
        """Writing hs_marketable_status needs the status permission: checked before
        anything is written, so a refused request changes nothing."""
        if any(STATUS_PROPERTY in properties for properties in properties_list):
            self.require(STATUS)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response[CORRELATION_HEADER] = correlation_id(request)
        return response

    @staticmethod
    def parse(serializer_class, data) -> dict:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def render(self, outcome: WriteOutcome, names: list[str]) -> dict:
        body = contact_object(outcome.contact, names, self.now)
        if outcome.held:
            # Not HubSpot's (its status is read-only); clients ignore keys they do not know.
            body["heldForApproval"] = {STATUS_PROPERTY: outcome.held}
        return body


def _written_names(properties: dict) -> list[str]:
    """What a write answers with: the defaults, what it wrote, and — when it wrote the
    status — whether the contact stays marketing until the next update date."""
    names = [*DEFAULT_PROPERTIES, *properties]
    if STATUS_PROPERTY in properties:
        names.append("hs_marketable_until_renewal")
    return properties_to_read(names)


def _outcome_error(outcome: WriteOutcome) -> HubSpotError | None:
    if outcome.missing:
        return not_found()
    if outcome.existing_id is not None:
        return conflict(outcome.existing_id)
    if outcome.error is not None:
        error = outcome.error
        messages = error.message_dict if hasattr(error, "error_dict") else {"": error.messages}
        return invalid_properties(field_problems(messages))
    return None


def _parse_properties(properties: dict) -> ContactWrite:
    write, problems = parse_write(properties)
    if problems:
        raise invalid_properties(problems)
    return write


class ContactsView(HubSpotView):
    """GET a page of contacts; POST a new contact."""

    required = {"GET": (VIEW,), "POST": (ADD,)}

    def get(self, request):
        params = query_params(request)
        query = self.parse(ListQuery, params)
        if query["archived"]:
            return Response({"results": []})  # deleting a contact deletes it: none archived
        page, more = hubspot_contacts_page(after=int(query["after"]), limit=query["limit"])
        names = properties_to_read(params["properties"])
        body: dict = {"results": [contact_object(c, names, self.now) for c in page]}
        if more:
            after = str(page[-1].pk)
            link = {k: v for k, v in request.query_params.lists()}
            link["after"] = [after]
            body["paging"] = {
                "next": {
                    "after": after,
                    "link": request.build_absolute_uri(
                        f"{request.path}?{urlencode(link, doseq=True)}"
                    ),
                }
            }
        return Response(body)

    def post(self, request):
        data = self.parse(ObjectInputForCreate, request.data)
        self.require_status_permission([data["properties"]])
        write = _parse_properties(data["properties"])
        (outcome,) = hubspot_contacts_create(writes=[write], actor=request.user)
        if error := _outcome_error(outcome):
            raise error
        body = self.render(outcome, _written_names(data["properties"]))
        return Response(body, status=http.HTTP_201_CREATED)


class ContactView(HubSpotView):
    """GET, PATCH or DELETE (archive) one contact, by id or by email (`idProperty`)."""

    required = {"GET": (VIEW,), "PATCH": (CHANGE,), "DELETE": (DELETE,)}

    def _contact(self, contact_id: str, query: dict):
        contact = hubspot_contact_get(value=contact_id, id_property=query["idProperty"])
        if contact is None or query["archived"]:
            raise not_found()
        return contact

    def get(self, request, contact_id: str):
        params = query_params(request)
        query = self.parse(ReadQuery, params)
        contact = self._contact(contact_id, query)
        return Response(contact_object(contact, properties_to_read(params["properties"]), self.now))

    def patch(self, request, contact_id: str):
        query = self.parse(ReadQuery, query_params(request))
        data = self.parse(ObjectInput, request.data)
        self.require_status_permission([data["properties"]])
        write = _parse_properties(data["properties"])
        contact = self._contact(contact_id, query)
        (outcome,) = hubspot_contacts_update(items=[(contact.pk, write)], actor=request.user)
        if error := _outcome_error(outcome):
            raise error
        return Response(self.render(outcome, _written_names(data["properties"])))

    def delete(self, request, contact_id: str):
        # Archiving what does not exist (any more) is done already: 204, as HubSpot answers.
        query = self.parse(ReadQuery, query_params(request))
        contact = hubspot_contact_get(value=contact_id, id_property=query["idProperty"])
        if contact is not None:
            hubspot_contacts_archive(ids=[contact.pk], actor=request.user)
        return Response(status=http.HTTP_204_NO_CONTENT)


class MergeView(HubSpotView):
    """POST two ids: the second contact is merged into the first (contacts.merge), which
    is answered in HubSpot's object shape."""

    required = {"POST": (CHANGE, DELETE)}

    def post(self, request):
        data = self.parse(MergeInput, request.data)
        primary = contact_key(data["primaryObjectId"], ID_PROPERTY)
        secondary = contact_key(data["objectIdToMerge"], ID_PROPERTY)
        if primary is None or secondary is None:
            raise not_found()
        try:
            result = contacts_merge(survivor=primary, merged_away=secondary, by=request.user)
        except MergeNotFound as error:
            raise not_found() from error
        except MarketingNotPermitted as error:
            raise missing_permissions([STATUS]) from error
        except (MergeError, LockedSourceError) as error:
            # The same contact twice, one already merged elsewhere, the locked-source rule.
            raise validation_error(str(error)) from error
        survivor = hubspot_contact_get(value=str(result.survivor.pk))
        # The defaults and the status: a merge may change the survivor's.
        names = _written_names({STATUS_PROPERTY: None})
        return Response(contact_object(survivor, names, self.now))


def _trace_context(index: int, item: dict) -> dict[str, list[str]]:
    context = {"index": [str(index)]}
    if item.get("objectWriteTraceId"):
        context["objectWriteTraceId"] = [item["objectWriteTraceId"]]
    return context


def _traced(body: dict, item: dict) -> dict:
    if item.get("objectWriteTraceId"):
        body["objectWriteTraceId"] = item["objectWriteTraceId"]
    return body


def _duplicate(item_id: str) -> HubSpotError:
    return validation_error(f"Duplicate id in the batch: {item_id}.")


class BatchView(HubSpotView):
    """Shared by the batch endpoints: each input succeeds or fails on its own; failures are
    HubSpot's per-input errors and the answer is 207 (multi-status) when there are any."""

    ok_status = http.HTTP_200_OK

    def answer(self, started_at, results: list[dict], errors: list[dict]) -> Response:
        body = batch_response(results=results, errors=errors, started_at=started_at)
        return Response(body, status=http.HTTP_207_MULTI_STATUS if errors else self.ok_status)

    def writes(self, inputs: list[dict], errors: list[dict]) -> dict[int, ContactWrite]:
        """Each input's properties parsed; refused ones become errors (by input index)."""
        writes = {}
        for index, item in enumerate(inputs):
            write, problems = parse_write(item["properties"])
            if problems:
                errors.append(
                    batch_error(invalid_properties(problems), context=_trace_context(index, item))
                )
            else:
                writes[index] = write
        return writes

    @staticmethod
    def unique(indexes: list[int], inputs, errors: list[dict], key) -> list[int]:
        """The inputs whose contact no earlier input names (by `key`); a repeat is an error."""
        kept, seen = [], set()
        for index in indexes:
            if key(index) in seen:
                context = _trace_context(index, inputs[index])
                errors.append(batch_error(_duplicate(inputs[index]["id"]), context=context))
            else:
                seen.add(key(index))
                kept.append(index)
        return kept

    def results(
        self, inputs, outcomes: dict[int, WriteOutcome], errors: list[dict], *, upsert=False
    ):
        results = []
        for index, outcome in sorted(outcomes.items()):
            item = inputs[index]
            if error := _outcome_error(outcome):
                context = _trace_context(index, item)
                if "id" in item:
                    context["ids"] = [item["id"]]
                errors.append(batch_error(error, context=context))
                continue
            body = _traced(self.render(outcome, _written_names(item["properties"])), item)
            if upsert:
                body["new"] = outcome.created
            results.append(body)
        return results


class BatchCreateView(BatchView):
    required = {"POST": (ADD,)}
    ok_status = http.HTTP_201_CREATED

    def post(self, request):
        started_at = timezone.now()
        inputs = self.parse(BatchCreateInput, request.data)["inputs"]
        self.require_status_permission(item["properties"] for item in inputs)
        errors: list[dict] = []
        writes = self.writes(inputs, errors)
        created = hubspot_contacts_create(writes=list(writes.values()), actor=request.user)
        outcomes = dict(zip(writes, created, strict=True))
        return self.answer(started_at, self.results(inputs, outcomes, errors), errors)


class BatchReadView(BatchView):
    required = {"POST": (VIEW,)}

    def post(self, request):
        started_at = timezone.now()
        data = self.parse(BatchReadInput, request.data)
        id_property = data.get("idProperty") or ID_PROPERTY
        values = list(dict.fromkeys(item["id"] for item in data["inputs"]))
        found = hubspot_contacts_by_keys(values=values, id_property=id_property)
        names = properties_to_read(data.get("properties"))
        results = [contact_object(found[v], names, self.now) for v in values if v in found]
        missing = [v for v in values if v not in found]
        errors = []
        if missing:
            error = HubSpotError(
                http.HTTP_404_NOT_FOUND,
                OBJECT_NOT_FOUND,
                "Could not get some CONTACT objects, they may be deleted or not exist. "
                "Check that ids are valid.",
            )
            errors.append(batch_error(error, context={"ids": missing}))
        return self.answer(started_at, results, errors)


class BatchUpdateView(BatchView):
    required = {"POST": (CHANGE,)}

    def post(self, request):
        started_at = timezone.now()
        inputs = self.parse(BatchUpdateInput, request.data)["inputs"]
        self.require_status_permission(item["properties"] for item in inputs)
        errors: list[dict] = []
        writes = self.writes(inputs, errors)
        found = {}
        for id_property in (ID_PROPERTY, EMAIL_PROPERTY):
            found[id_property] = hubspot_contacts_by_keys(
                values=[
                    i["id"] for i in inputs if (i.get("idProperty") or ID_PROPERTY) == id_property
                ],
                id_property=id_property,
            )
        contacts = {
            index: found[inputs[index].get("idProperty") or ID_PROPERTY].get(inputs[index]["id"])
            for index in writes
        }
        outcomes = {i: WriteOutcome(missing=True) for i, c in contacts.items() if c is None}
        kept = self.unique(
            [i for i, c in contacts.items() if c is not None],
            inputs,
            errors,
            lambda i: contacts[i].pk,
        )
        items = [(index, contacts[index].pk) for index in kept]
        updated = hubspot_contacts_update(
            items=[(pk, writes[index]) for index, pk in items], actor=request.user
        )
        outcomes.update({index: o for (index, _), o in zip(items, updated, strict=True)})
        return self.answer(started_at, self.results(inputs, outcomes, errors), errors)


class BatchUpsertView(BatchView):
    required = {"POST": (ADD, CHANGE)}

    def post(self, request):
        started_at = timezone.now()
        inputs = self.parse(BatchUpsertInput, request.data)["inputs"]
        self.require_status_permission(item["properties"] for item in inputs)
        errors: list[dict] = []
        writes = self.writes(inputs, errors)
        items = self.unique(
            list(writes), inputs, errors, lambda i: contact_key(inputs[i]["id"], EMAIL_PROPERTY)
        )
        upserted = hubspot_contacts_upsert(
            items=[(inputs[index]["id"], writes[index]) for index in items], actor=request.user
        )
        outcomes = dict(zip(items, upserted, strict=True))
        return self.answer(started_at, self.results(inputs, outcomes, errors, upsert=True), errors)


class BatchArchiveView(HubSpotView):
    required = {"POST": (DELETE,)}

    def post(self, request):
        inputs = self.parse(BatchArchiveInput, request.data)["inputs"]
        found = hubspot_contacts_by_keys(values=[item["id"] for item in inputs])
        hubspot_contacts_archive(ids=sorted({c.pk for c in found.values()}), actor=request.user)
        return Response(status=http.HTTP_204_NO_CONTENT)


class SearchView(HubSpotView):
    required = {"POST": (VIEW,)}

    def post(self, request):
        data = self.parse(SearchInput, request.data)
        page = hubspot_contacts_search(
            filter_groups=data["filterGroups"] or [],
            sorts=data["sorts"] or [],
            query=data["query"] or "",
            limit=data["limit"] or SEARCH_DEFAULT_LIMIT,
            after=data["after"] or 0,
            now=self.now,
        )
        names = properties_to_read(data.get("properties"))
        body: dict = {
            "total": page.total,
            "results": [contact_object(c, names, self.now) for c in page.results],
        }
        if page.next_after is not None:
            body["paging"] = {"next": {"after": str(page.next_after)}}
        return Response(body)


def _object_type(object_type: str) -> None:
    if object_type not in OBJECT_TYPES:
        raise validation_error(f"Unable to infer object type from: {object_type}")


class PropertiesView(HubSpotView):
    required = {"GET": (VIEW,)}

    def get(self, request, object_type: str):
        _object_type(object_type)
        if self.parse(ReadQuery, query_params(request))["archived"]:
            return Response({"results": []})
        return Response(
            {
                "results": [
                    property_definition(prop, order)
                    for order, prop in enumerate(PROPERTIES.values())
                ]
            }
        )


class PropertyView(HubSpotView):
    required = {"GET": (VIEW,)}

    def get(self, request, object_type: str, name: str):
        _object_type(object_type)
        if name not in PROPERTIES:
            raise not_found()
        order = list(PROPERTIES).index(name)
        return Response(property_definition(PROPERTIES[name], order))


class UnknownView(HubSpotView):
    """Any other path under /crm/v3/: HubSpot's 404, not an HTML page."""

    def initial(self, request, *args, **kwargs):
        raise not_found()
