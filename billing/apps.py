from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # Billing listens to contacts (contacts/hooks.py): alerts after each committed change,
        # and the money shown beside every preview.
        from billing.guardrails import preview_extension
        from contacts.hooks import register_preview_extension, register_usage_listener

        register_usage_listener(_on_usage_changed)
        register_preview_extension(preview_extension)


def _on_usage_changed(change) -> None:
    from billing.alerts import billing_check_alerts

    billing_check_alerts(change=change)
