from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        # Events contacts records itself (form submissions, chats, ads leads) are scored
        # after they commit; the engagement API scores its own in its transaction.
        from contacts.hooks import register_engagement_listener
        from workflows.scoring import scores_on_engagement_recorded

        register_engagement_listener(scores_on_engagement_recorded)
        # Event triggers: contacts notifies its contact listeners (contacts/hooks.py) with the
        # ids of created/updated contacts after commit; workflows evaluates just those.
        from contacts.hooks import register_contact_listener
        from workflows.tasks import event_workflows_enabled, on_contacts_changed

        register_contact_listener(on_contacts_changed, listening=event_workflows_enabled)
        # Merges: a merged-away contact's enrollments and rotation memberships move to the
        # survivor, inside the merge's transaction (contacts/hooks.py explains why).
        from contacts.hooks import register_merge_listener
        from workflows.merge import workflows_on_contacts_merged

        register_merge_listener(workflows_on_contacts_merged)
