from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "Account"

    def ready(self):
        from django.db.backends.signals import connection_created

        from crm.inputs import admin_json_fields_checked
        from crm.instants import register_utc_datetimes
        from crm.metrics import connect_job_signals

        connection_created.connect(register_utc_datetimes, dispatch_uid="crm.utc_datetimes")
        admin_json_fields_checked()
        connect_job_signals()
