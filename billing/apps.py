from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # Billing plugs into contacts through its explicit hooks (contacts/hooks.py):
        # alerts after each committed change, the money in every preview, and the guardrails.
        from billing.guardrails import guard, preview_extension
        from contacts.hooks import (
            register_change_guard,
            register_preview_extension,
            register_usage_listener,
        )

        register_usage_listener(_on_usage_changed)
        register_preview_extension(preview_extension)
        register_change_guard(guard)


def _on_usage_changed(change) -> None:
    from billing.services import billing_check_alerts

    billing_check_alerts(change=change)
