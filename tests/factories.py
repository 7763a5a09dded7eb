import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from contacts.models import Contact, LifecycleStage, Source, SourceKind


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Source {n}")
    kind = SourceKind.MANUAL
    default_marketing = factory.LazyAttribute(lambda o: Source.kind_default(o.kind))


class ContactFactory(factory.django.DjangoModelFactory):
    """A non-marketing contact. Make it marketing through the status service, never here."""

    class Meta:
        model = Contact

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    # Predictable names: a random "Lee" or "Acme" would make search tests flaky.
    first_name = factory.Sequence(lambda n: f"Person{n}")
    last_name = factory.Sequence(lambda n: f"Surname{n}")
    company = factory.Sequence(lambda n: f"Company {n}")
    lifecycle_stage = LifecycleStage.LEAD
    source = factory.SubFactory(SourceFactory)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@staff.example.com")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "pw")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if not create:
            return
        for name in extracted or []:
            self.groups.add(Group.objects.get(name=name))
        self.save()


def set_guardrails(**values):
    """Set the account's hard cap and per-operation limit (crm.Account)."""
    from crm.models import Account

    account = Account.load()
    for name, value in values.items():
        setattr(account, name, value)
    account.save()
    return account
