"""Pages the public sees (not the admin, not the API): the hosted forms."""

from django.urls import path

from contacts.intake import views

app_name = "contacts_public"

urlpatterns = [
    path("<slug:slug>/", views.form_page, name="form"),
    path("<slug:slug>/thanks/", views.form_thanks, name="form_thanks"),
]
