"""A HubSpot-compatible subset of the CRM v3 contacts API (docs/HUBSPOT.md).

The official `hubspot-api-client`, pointed at Marketable (`HubSpot(access_token=<API
token>, host=<Marketable's address>)`), works unchanged for contacts: objects, batch,
search and the properties list. By concern:

* `mapping`: the one table between HubSpot's properties and Marketable's fields;
* `search`: HubSpot's search request compiled by contacts.criteria, one query a page;
* `selectors` / `services`: reads, and writes composed of contacts' own services;
* `serializers`, `errors`, `auth`, `views`, `urls`: the interface.
"""
