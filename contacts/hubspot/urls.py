"""/crm/v3/: HubSpot's paths, without trailing slashes (its clients add none)."""

from django.urls import path, re_path

from contacts.hubspot import views

urlpatterns = [
    path("objects/contacts", views.ContactsView.as_view()),
    # Before the contact's own path, which would take "search" for an id.
    path("objects/contacts/search", views.SearchView.as_view()),
    path("objects/contacts/batch/create", views.BatchCreateView.as_view()),
    path("objects/contacts/batch/read", views.BatchReadView.as_view()),
    path("objects/contacts/batch/update", views.BatchUpdateView.as_view()),
    path("objects/contacts/batch/upsert", views.BatchUpsertView.as_view()),
    path("objects/contacts/batch/archive", views.BatchArchiveView.as_view()),
    path("objects/contacts/merge", views.MergeView.as_view()),
    path("objects/contacts/<str:contact_id>", views.ContactView.as_view()),
    path("properties/<str:object_type>", views.PropertiesView.as_view()),
    path("properties/<str:object_type>/<str:name>", views.PropertyView.as_view()),
    re_path(r"", views.UnknownView.as_view()),
]
