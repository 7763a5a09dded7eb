from django.apps import AppConfig


class ContactsConfig(AppConfig):
    name = "contacts"

    def ready(self):
        from contacts.status.metrics import UsageCollector
        from crm.metrics import register_scrape_collector

        register_scrape_collector(UsageCollector())
