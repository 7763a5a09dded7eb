"""CSV imports in the admin: upload, map the columns, preview the cost, run, download errors."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import (
    Http404,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from contacts.imports.api.views import import_errors_csv_response
from contacts.imports.models import (
    ContactImport,
    ImportFormat,
    ImportStatus,
)
from contacts.imports.parsing import (
    IMPORT_DEFAULT_SOURCE,
    IMPORT_FIELDS,
    ImportFileError,
    ImportNotAllowed,
    ImportStateError,
    import_check_size,
    import_fields,
    import_max_bytes,
)
from contacts.imports.selectors import (
    contact_import_list,
    import_sources,
)
from contacts.imports.services import (
    contact_import_commit,
    contact_import_configure,
    contact_import_create,
    contact_import_discard,
    contact_import_preview,
    contact_import_resume,
    contact_import_sync,
)
from contacts.models import (
    Source,
)
from contacts.status.rules import can_change_marketing_status
from crm.jobs import JobNotQueued, jobs_expire_stale
from crm.text import counted


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8 (with or without BOM), comma or semicolon separated, with a header row.",
    )
    source = forms.ModelChoiceField(
        queryset=Source.objects.none(),
        required=False,
        empty_label=f"{IMPORT_DEFAULT_SOURCE} (the default)",
        help_text="Recorded as the source of the contacts this import creates.",
    )
    file_format = forms.ChoiceField(
        label="Format",
        choices=[("", "Detect from the header"), *ImportFormat.choices],
        required=False,
        help_text="A HubSpot contacts export is mapped by HubSpot's column names and keeps each "
        "contact's marketing status (with the permission to change statuses).",
    )
    marketing = forms.BooleanField(
        required=False,
        label="Set all contacts in this import as marketing",
        help_text="They count toward this period's bill at once. Contacts already marketing stay "
        "so; without this, no contact's status changes.",
    )

    def __init__(self, *args, can_mark_marketing: bool, **kwargs):
        super().__init__(*args, **kwargs)
        # The default source is the empty choice (found by name, created when missing): it
        # is not listed a second time.
        self.fields["source"].queryset = import_sources().exclude(name=IMPORT_DEFAULT_SOURCE)
        if not can_mark_marketing:
            del self.fields["marketing"]

    def clean_file(self):
        upload = self.cleaned_data["file"]
        try:
            import_check_size(upload.size)
        except ImportFileError as error:
            raise ValidationError(str(error)) from error
        return upload


class ImportMappingForm(forms.Form):
    """One select per column of the file, prefilled with the detected field."""

    def __init__(self, *args, contact_import: ContactImport, can_mark_marketing: bool, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [("", "— ignore this column —")] + [
            (name, spec.label) for name, spec in import_fields(contact_import.format).items()
        ]
        self.columns = [c for c in contact_import.columns if c]
        for number, column in enumerate(self.columns):
            self.fields[f"column_{number}"] = forms.ChoiceField(
                label=column,
                choices=choices,
                required=False,
                initial=contact_import.mapping.get(column, ""),
            )
        if can_mark_marketing:
            self.fields["marketing"] = forms.BooleanField(
                required=False,
                initial=contact_import.marketing,
                label="Set all contacts in this import as marketing",
            )

    def mapping(self) -> dict[str, str]:
        return {
            column: self.cleaned_data.get(f"column_{number}") or ""
            for number, column in enumerate(self.columns)
        }

    def column_fields(self):
        return [self[f"column_{number}"] for number in range(len(self.columns))]


IMPORT_ADD_PERMISSION = "contacts.add_contactimport"


def _asked_marketing(form: forms.Form, default: bool) -> bool:
    """The "set all as marketing" box as posted. A user without the status permission is
    not shown it; one who posts it anyway has it passed on, so the service refuses the
    import (`ImportNotAllowed`, a form error) instead of quietly ignoring the box."""
    if "marketing" in form.fields:
        return bool(form.cleaned_data.get("marketing"))
    return forms.CheckboxInput().value_from_datadict(form.data, form.files, "marketing") or default


DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}


def import_mapping_table(mapping: dict | None):
    """The column mapping as a table: CSV column → contact field (or "ignored")."""
    if not mapping:
        return "—"
    labels = {name: spec.label for name, spec in IMPORT_FIELDS.items()}
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td></tr>",
        (
            (column, labels.get(field, field) if field else "ignored")
            for column, field in mapping.items()
        ),
    )
    return format_html(
        '<table class="import-mapping"><thead><tr><th scope="col">CSV column</th>'
        '<th scope="col">Contact field</th></tr></thead><tbody>{}</tbody></table>',
        rows,
    )


def import_button_label(preview: dict) -> str:
    """The confirm button: the rows that will be imported, and those skipped with errors."""
    rows = preview.get("rows", 0)
    skipped = preview.get("invalid", 0) + preview.get("duplicates", 0)
    label = f"Import {counted(rows - skipped, 'row')}"
    if skipped:
        label += f" ({skipped:,} with errors will be skipped)"
    return label


@admin.register(ContactImport)
class ContactImportAdmin(admin.ModelAdmin):
    """Imports: upload → mapping → preview → confirm → progress. Read-only once committed;
    every step calls contacts.services."""

    list_display = [
        "id",
        "file_name",
        "status",
        "progress_display",
        "rows",
        "created_count",
        "updated_count",
        "unchanged_count",
        "invalid_count",
        "marketing",
        "created_by",
        "created_at",
    ]
    list_display_links = ["id", "file_name"]
    list_filter = ["status", "marketing"]
    list_select_related = ["created_by", "source"]
    search_fields = ["file_name"]
    actions = None
    fieldsets = [
        (None, {"fields": ["file_name", "status", "phase_display", "message", "errors_link"]}),
        (
            "Counts",
            {
                "fields": [
                    "accounting_display",
                    "rows",
                    "created_count",
                    "updated_count",
                    "unchanged_count",
                    "invalid_count",
                    "duplicate_count",
                    "marketing_count",
                ]
            },
        ),
        (
            "Set-up",
            {
                "fields": [
                    "source",
                    "format",
                    "marketing",
                    "mapping_display",
                    "delimiter_display",
                    "file_size_display",
                    "file_hash",
                ]
            },
        ),
        (
            "Record",
            {
                "fields": [
                    "created_by",
                    "committed_by",
                    "created_at",
                    "previewed_at",
                    "committed_at",
                    "started_at",
                    "finished_at",
                ]
            },
        ),
    ]

    def get_queryset(self, request):
        return contact_import_list()

    def get_readonly_fields(self, request, obj=None):
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def has_change_permission(self, request, obj=None):
        return False  # an import is changed only through its steps

    def has_delete_permission(self, request, obj=None):
        # Only an import that never ran: a committed one is the record of what was imported.
        return (
            obj is not None
            and obj.status in (ImportStatus.DRAFT, ImportStatus.PREVIEWED, ImportStatus.FAILED)
            and request.user.has_perm("contacts.delete_contactimport")
        )

    def delete_model(self, request, obj):
        contact_import_discard(contact_import=obj)

    @admin.display(description="Progress")
    def progress_display(self, obj: ContactImport) -> str:
        if obj.status in (ImportStatus.QUEUED, ImportStatus.RUNNING):
            return f"{obj.progress_percent}% ({obj.phase_display or obj.get_status_display()})"
        return obj.get_status_display()

    @admin.display(description="Doing now")
    def phase_display(self, obj: ContactImport) -> str:
        return obj.phase_display or self.get_empty_value_display()

    @admin.display(description="Column mapping")
    def mapping_display(self, obj: ContactImport):
        return import_mapping_table(obj.mapping)

    @admin.display(description="Delimiter")
    def delimiter_display(self, obj: ContactImport) -> str:
        return DELIMITER_NAMES.get(obj.delimiter, f"“{obj.delimiter}”")

    @admin.display(description="File size")
    def file_size_display(self, obj: ContactImport) -> str:
        return filesizeformat(obj.file_size)

    @admin.display(description="Rows read")
    def accounting_display(self, obj: ContactImport) -> str:
        if obj.status not in (ImportStatus.DONE, ImportStatus.HELD):
            return "—"
        return (
            f"{obj.rows:,} = {obj.imported_count:,} imported + {obj.reported_count:,} "
            "reported (row errors)"
        )

    @admin.display(description="Row errors")
    def errors_link(self, obj: ContactImport):
        if not obj.invalid_count and not obj.duplicate_count:
            return "none"
        url = reverse(f"{self.admin_site.name}:contacts_contactimport_errors", args=[obj.pk])
        return format_html(
            '<a href="{}">Download the row errors (CSV)</a>: {} invalid, {} duplicate',
            url,
            obj.invalid_count,
            obj.duplicate_count,
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/mapping/", view(self.mapping_view), name="contacts_contactimport_mapping"
            ),
            path(
                "<int:pk>/preview/", view(self.preview_view), name="contacts_contactimport_preview"
            ),
            path(
                "<int:pk>/progress/",
                view(self.progress_view),
                name="contacts_contactimport_progress",
            ),
            path(
                "<int:pk>/errors.csv", view(self.errors_view), name="contacts_contactimport_errors"
            ),
            path("<int:pk>/resume/", view(self.resume_view), name="contacts_contactimport_resume"),
            *super().get_urls(),
        ]

    def _url(self, name: str, pk: int) -> str:
        return reverse(f"{self.admin_site.name}:contacts_contactimport_{name}", args=[pk])

    def _render(self, request, template: str, title: str, **context):
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request,
            f"admin/contacts/contactimport/{template}",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "subtitle": None,
                "opts": self.opts,
                "media": self.media,
                **context,
            },
        )

    def _import_for_step(self, request, pk: int) -> ContactImport:
        if not self.has_add_permission(request):
            raise PermissionDenied
        contact_import = self.get_queryset(request).filter(pk=pk).first()
        if contact_import is None:
            raise Http404("No such import.")
        return contact_import

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        can_mark = can_change_marketing_status(request.user)
        form = ImportUploadForm(
            request.POST or None, request.FILES or None, can_mark_marketing=can_mark
        )
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                contact_import = contact_import_create(
                    file=upload,
                    file_name=upload.name,
                    actor=request.user,
                    source=form.cleaned_data.get("source"),
                    marketing=_asked_marketing(form, False),
                    file_format=form.cleaned_data.get("file_format") or None,
                )
            except ImportFileError as error:
                form.add_error("file", str(error))
            except ImportNotAllowed as error:
                form.add_error(None, str(error))
            else:
                return HttpResponseRedirect(self._url("mapping", contact_import.pk))
        return self._render(
            request,
            "upload.html",
            "Import contacts from a CSV file",
            form=form,
            max_bytes=import_max_bytes(),
        )

    def mapping_view(self, request, pk: int):
        contact_import = self._import_for_step(request, pk)
        if contact_import.status not in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
            return HttpResponseRedirect(self._change_url(contact_import))
        can_mark = can_change_marketing_status(request.user)
        form = ImportMappingForm(
            request.POST or None, contact_import=contact_import, can_mark_marketing=can_mark
        )
        if request.method == "POST" and form.is_valid():
            try:
                contact_import_configure(
                    contact_import=contact_import,
                    mapping=form.mapping(),
                    marketing=_asked_marketing(form, contact_import.marketing),
                    actor=request.user,
                )
                contact_import_preview(contact_import=contact_import, actor=request.user)
            except (ImportFileError, ImportNotAllowed, ImportStateError) as error:
                form.add_error(None, str(error))
            else:
                return HttpResponseRedirect(self._url("preview", contact_import.pk))
        return self._render(
            request,
            "mapping.html",
            f"Map the columns of “{contact_import.file_name}”",
            form=form,
            contact_import=contact_import,
        )

    def _change_url(self, contact_import: ContactImport) -> str:
        return reverse(
            f"{self.admin_site.name}:contacts_contactimport_change", args=[contact_import.pk]
        )

    def preview_view(self, request, pk: int):
        contact_import = self._import_for_step(request, pk)
        if contact_import.status != ImportStatus.PREVIEWED:
            if contact_import.status == ImportStatus.DRAFT:
                return HttpResponseRedirect(self._url("mapping", contact_import.pk))
            return HttpResponseRedirect(self._change_url(contact_import))
        preview = contact_import.preview
        becomes = preview.get("becomes_marketing", 0)
        threshold = getattr(settings, "MARKETING_CONFIRM_THRESHOLD", 1_000)
        require_count = becomes > threshold
        error = ""
        if request.method == "POST":
            typed = "".join(ch for ch in request.POST.get("confirm_count", "") if ch.isdigit())
            if require_count and typed != str(becomes):
                error = (
                    f"Type {becomes:,} (the number of contacts that become marketing) to confirm."
                )
            else:
                try:
                    contact_import_commit(contact_import=contact_import, actor=request.user)
                except (ImportNotAllowed, ImportStateError) as failure:
                    error = str(failure)
                except JobNotQueued as failure:  # stored, failed with the reason: resumable
                    self.message_user(request, str(failure), messages.ERROR)
                    return HttpResponseRedirect(self._change_url(contact_import))
                else:
                    self.message_user(
                        request,
                        f"The import of “{contact_import.file_name}” is running in the background.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(self._change_url(contact_import))
        status_preview = preview.get("status_preview", {})
        return self._render(
            request,
            "preview.html",
            f"Import “{contact_import.file_name}”?",
            contact_import=contact_import,
            preview=preview,
            status_preview=status_preview,
            cost=(status_preview.get("extra") or {}).get("cost")
            if contact_import.marketing or preview.get("file_statuses")
            else None,
            require_count=require_count,
            threshold=threshold,
            error=error,
            errors_url=self._url("errors", contact_import.pk),
            mapping_url=self._url("mapping", contact_import.pk),
            mapping_table=import_mapping_table(contact_import.mapping),
            import_label=import_button_label(preview),
        )

    def progress_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        contact_import = self.get_queryset(request).filter(pk=pk).first()
        if contact_import is None:
            raise Http404("No such import.")
        contact_import = contact_import_sync(contact_import=contact_import)
        return JsonResponse(
            {
                "status": contact_import.status,
                "status_display": contact_import.get_status_display(),
                "phase": contact_import.phase,
                "phase_display": contact_import.phase_display,
                "processed_rows": contact_import.processed_rows,
                "total_rows": contact_import.total_rows,
                "percent": contact_import.progress_percent,
                "finished": contact_import.status
                in (ImportStatus.DONE, ImportStatus.HELD, ImportStatus.FAILED),
            }
        )

    def resume_view(self, request, pk: int):
        """POST: queue a failed import again; it goes on where it stopped."""
        contact_import = self._import_for_step(request, pk)
        if request.method != "POST":
            return HttpResponseRedirect(self._change_url(contact_import))
        try:
            contact_import_resume(contact_import=contact_import, actor=request.user)
        except (ImportNotAllowed, ImportStateError, JobNotQueued) as failure:
            self.message_user(request, str(failure), messages.ERROR)
        else:
            self.message_user(
                request,
                f"The import of “{contact_import.file_name}” is queued again: it goes on where "
                "it stopped.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(self._change_url(contact_import))

    def changelist_view(self, request, extra_context=None):
        jobs_expire_stale(model=ContactImport)  # running imports whose worker died
        return super().changelist_view(request, extra_context)

    def errors_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        contact_import = self.get_queryset(request).filter(pk=pk).first()
        if contact_import is None:
            raise Http404("No such import.")
        return import_errors_csv_response(contact_import)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        contact_import = self.get_queryset(request).filter(pk=object_id).first()
        extra_context = dict(extra_context or {})
        if contact_import is not None:
            contact_import = contact_import_sync(contact_import=contact_import)
            extra_context["contact_import"] = contact_import
            extra_context["progress_url"] = self._url("progress", contact_import.pk)
            extra_context["running"] = contact_import.status in (
                ImportStatus.QUEUED,
                ImportStatus.RUNNING,
            )
            extra_context["resume_url"] = (
                self._url("resume", contact_import.pk)
                if contact_import.status == ImportStatus.FAILED
                and contact_import.committed_at
                and self.has_add_permission(request)
                else ""
            )
            if contact_import.status in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
                extra_context["next_step_url"] = self._url(
                    "mapping" if contact_import.status == ImportStatus.DRAFT else "preview",
                    contact_import.pk,
                )
        return super().change_view(request, object_id, form_url, extra_context)
