from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        # Billing reacts at once to committed status changes through contacts' one hook.
        from contacts.hooks import register_usage_listener

        register_usage_listener(_on_usage_changed)


def _on_usage_changed(change) -> None:
    from billing.services import billing_check_alerts

    billing_check_alerts(change=change)
