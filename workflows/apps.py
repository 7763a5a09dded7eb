from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        # Event triggers: contacts notifies its contact listeners (contacts/hooks.py) with the
        # ids of created/updated contacts after commit; workflows evaluates just those.
        from contacts.hooks import register_contact_listener
        from workflows.tasks import on_contacts_changed

        register_contact_listener(on_contacts_changed)
