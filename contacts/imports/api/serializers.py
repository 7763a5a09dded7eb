"""Serializers of CSV imports."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.imports.models import ContactImport, ImportFormat
from contacts.models import (
    Source,
    SourceKind,
)
from crm.inputs import JSONInputError, json_input_loads


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class ImportMappingField(serializers.Field):
    """A mapping object {"column": "field"}; in a multipart upload, the same as a JSON string."""

    default_error_messages = {
        "invalid": 'Give an object {{"column name": "field", …}} (a JSON string in a form upload).'
    }

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json_input_loads(data) if data.strip() else {}
            except JSONInputError as error:
                raise serializers.ValidationError(str(error)) from error
            except ValueError:
                self.fail("invalid")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
        ):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class ContactImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A CSV file, UTF-8 (with or without BOM), comma or semicolon separated."
    )
    mapping = ImportMappingField(
        required=False,
        help_text='Column name → field ("" ignores the column), over the columns detected by their names.',
    )
    format = serializers.ChoiceField(
        choices=ImportFormat.choices,
        required=False,
        allow_null=True,
        help_text="\"hubspot\" for HubSpot's contacts export (mapped by HubSpot's column names; "
        'its "Marketing contact status" kept with contacts.change_marketing_status), "csv" for '
        "any other file; detected from the header when not given.",
    )
    marketing = serializers.BooleanField(
        default=False,
        help_text="Set every contact in this import as marketing (needs contacts.change_marketing_status).",
    )
    source = serializers.PrimaryKeyRelatedField(
        queryset=Source.objects.filter(kind=SourceKind.IMPORT),
        required=False,
        allow_null=True,
        help_text='An import source for new contacts (default: "CSV import").',
    )

    def validate_file(self, value):
        from contacts.imports.parsing import (
            ImportFileError,
            import_check_size,
        )

        try:
            import_check_size(value.size)
        except ImportFileError as error:
            raise serializers.ValidationError(str(error)) from error
        return value


class ContactImportSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    errors_url = serializers.SerializerMethodField()

    class Meta:
        model = ContactImport
        fields = [
            "id",
            "file_name",
            "file_size",
            "file_hash",
            "status",
            "phase",
            "progress",
            "columns",
            "format",
            "mapping",
            "marketing",
            "source",
            "source_name",
            "counts",
            "preview",
            "marketing_result",
            "message",
            "errors_url",
            "created_by",
            "created_at",
            "previewed_at",
            "committed_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "processed_rows": {"type": "integer"},
                "total_rows": {"type": "integer"},
                "percent": {"type": "integer"},
            },
        }
    )
    def get_progress(self, obj) -> dict:
        return {
            "processed_rows": obj.processed_rows,
            "total_rows": obj.total_rows,
            "percent": obj.progress_percent,
        }

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_counts(self, obj) -> dict:
        return {
            "rows": obj.rows,
            "imported": obj.imported_count,
            "reported": obj.reported_count,
            "created": obj.created_count,
            "updated": obj.updated_count,
            "unchanged": obj.unchanged_count,
            "invalid": obj.invalid_count,
            "duplicates": obj.duplicate_count,
            "marketing": obj.marketing_count,
        }

    def get_errors_url(self, obj) -> str:
        request = self.context.get("request")
        path = f"/api/imports/{obj.pk}/errors/"
        return request.build_absolute_uri(path) if request else path
