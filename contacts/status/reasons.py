"""Why a contact's status changed, in the words a person would use.

The ledger, the contact and a held change record the reason as a source type, an id and a
name (`workflow` / 7 / "MQL definition"); every screen shows it through
`status_reason_text`, so the same change reads the same everywhere: "Workflow “MQL
definition”", "Changed on the contact page by admin", "Demo data".
"""

from __future__ import annotations

from contacts.models import StatusSourceType as T

# Sources whose name is a person (the one who asked): "… by <name>".
_BY_PERSON = {
    T.MANUAL: "Changed on the contact page",
    T.BULK_ACTION: "Bulk change in the admin",
    T.API: "Changed through the API",
    T.DELETION: "Deleted",
}
# Sources whose name is the thing that asked: "<kind> “<name>”".
_BY_THING = {
    T.CREATION: "Default of its source",
    T.WORKFLOW: "Workflow",
    T.IMPORT: "Import",
    T.FORM: "Form",
    T.INTEGRATION: "Connected app",
    T.CHATFLOW: "Chatflow",
    T.ADS: "Ad account",
    T.ROTATION: "Rotation plan",
    T.HYGIENE: "Hygiene clean-up",
}
# Sources that need no name: the system did it.
_PLAIN = {
    T.ROLLOVER: "Pending change applied at the start of the period",
    T.SEED: "Demo data",
}


def status_reason_text(
    source_type: str, source_id: str = "", source_name: str = "", actor: object = None
) -> str:
    """One phrase for a recorded reason; `actor` (a user, or its name) when it is known."""
    name = (source_name or "").strip()
    if source_type in _PLAIN:
        return _PLAIN[source_type]
    if source_type in _BY_PERSON:
        person = str(actor) if actor else ""
        # A person's source names the user; a bulk change or a deletion names the action.
        if not person and source_type in (T.MANUAL, T.API):
            person = name
        text = _BY_PERSON[source_type]
        if source_type == T.DELETION and name and not person:
            return f"{text} ({name[:1].lower()}{name[1:]})"
        return f"{text} by {person}" if person else text
    if source_type in _BY_THING:
        kind = _BY_THING[source_type]
        if not name:
            return f"{kind} #{source_id}" if source_id else kind
        # A name that already says what it is ("External form “signup”") stands alone.
        if name.lower().startswith(kind.lower()) or "“" in name:
            return name
        if source_type == T.CREATION:
            return f"Default of its source “{name}”"
        return f"{kind} “{name}”"
    return name or source_type
