"""The contacts admin's status changes: bulk actions with their confirmation and cost, guardrails, single-change costs and the background job's pages."""

from django.contrib.messages import get_messages
from django.test import override_settings

from billing.models import Subscription
from contacts.models import (
    Contact,
)
from contacts.status.models import (
    BulkStatusJob,
    PendingApproval,
    StatusChange,
    StatusChangeRequest,
)
from tests.contacts.admin.support import (
    M,
    N,
    change_url,
    confirm_action,
    day,
    key_of,
    make_marketing,
    messages_of,
    next_update,
    run_action,
    state,
    toggle_url,
    usage,
)
from tests.factories import ContactFactory, set_guardrails

# --- bulk status actions -------------------------------------------------------------


def test_bulk_set_marketing_shows_the_preview_first(ops_client, people):
    ids = [people[name].pk for name in ("ann", "bob", "cat", "dan")]
    ledger_before = StatusChange.objects.count()
    response = run_action(ops_client, "set_marketing_action", ids)
    assert response.status_code == 200
    assert response.templates[0].name == "admin/contacts/contact/marketing_confirmation.html"
    preview = response.context["preview"]
    assert (preview.matched, preview.would_change, preview.would_cancel, preview.already) == (
        4,
        2,
        1,
        1,
    )
    assert (preview.live_count, preview.live_after) == (2, 4)
    assert (preview.peak_count, preview.peak_after) == (2, 4)
    html = response.content.decode()
    assert '<tr id="preview-change"><th scope="row">Become marketing now' in html
    assert "<td>2 → 4</td>" in html
    assert html.count('name="_selected_action"') == 4
    assert 'name="confirm_count"' not in html
    assert StatusChange.objects.count() == ledger_before
    assert state(people["ann"]) == (N, None)


def test_bulk_set_marketing_confirmed(ops_client, marketing_ops, people):
    ids = [people["ann"].pk, people["cat"].pk]
    key = key_of(run_action(ops_client, "set_marketing_action", ids))
    response = confirm_action(ops_client, "set_marketing_action", ids, key)
    assert response.status_code == 302
    assert state(people["ann"]) == (M, None)
    assert state(people["cat"]) == (M, None)
    assert state(people["dan"]) == (N, None)
    request = StatusChangeRequest.objects.get(idempotency_key=key)
    assert (request.source_type, request.source_name, request.actor_id) == (
        "bulk_action",
        "Admin bulk action",
        marketing_ops.pk,
    )
    assert set(request.changes.values_list("contact_id", "action")) == {
        (people["ann"].pk, "upgrade"),
        (people["cat"].pk, "downgrade_cancelled"),
    }
    assert messages_of(response) == [
        "1 contact now marketing, 1 pending downgrade cancelled, "
        "0 already marketing. Live count 3, this period's peak 3."
    ]


def test_bulk_set_non_marketing_schedules_from_the_next_update(ops_client, people):
    ids = [people["ann"].pk, people["bob"].pk, people["cat"].pk]
    response = run_action(ops_client, "set_non_marketing_action", ids)
    preview = response.context["preview"]
    assert (preview.would_schedule, preview.already, preview.effective_from) == (
        1,
        2,
        next_update(),
    )
    assert f"Non-marketing from {day(next_update())}" in response.content.decode()
    response = confirm_action(ops_client, "set_non_marketing_action", ids, key_of(response))
    assert state(people["bob"]) == (M, next_update())
    assert state(people["ann"]) == (N, None)
    assert messages_of(response)[0].startswith(
        f"1 contact non-marketing from {day(next_update())} (billable until then)"
    )


@override_settings(MARKETING_CONFIRM_THRESHOLD=2)
def test_above_the_threshold_the_number_must_be_typed(ops_client, people):
    extra = ContactFactory.create_batch(2, source=people["ann"].source)
    ids = [people["ann"].pk, people["dan"].pk, *(c.pk for c in extra)]  # 4 would change
    page = run_action(ops_client, "set_marketing_action", ids)
    assert 'name="confirm_count"' in page.content.decode()
    key = key_of(page)
    ledger_before = StatusChange.objects.count()

    wrong = confirm_action(ops_client, "set_marketing_action", ids, key, count=3)
    assert wrong.status_code == 200
    assert "Type 4 (the number of contacts that will change) to confirm." in (
        wrong.content.decode()
    )
    assert key_of(wrong) == key
    assert StatusChange.objects.count() == ledger_before
    assert Contact.objects.filter(pk__in=ids, marketing_status=M).count() == 0

    missing = confirm_action(ops_client, "set_marketing_action", ids, key)
    assert missing.status_code == 200
    assert Contact.objects.filter(pk__in=ids, marketing_status=M).count() == 0

    right = confirm_action(ops_client, "set_marketing_action", ids, key, count="4")
    assert right.status_code == 302
    assert Contact.objects.filter(pk__in=ids, marketing_status=M).count() == 4
    assert StatusChange.objects.count() == ledger_before + 4


@override_settings(MARKETING_CONFIRM_THRESHOLD=2)
def test_below_or_at_the_threshold_no_number_is_asked(ops_client, people):
    ids = [people["ann"].pk, people["dan"].pk]
    page = run_action(ops_client, "set_marketing_action", ids)
    assert 'name="confirm_count"' not in page.content.decode()


def test_double_submit_with_the_same_key_changes_once(ops_client, people):
    ids = [people["ann"].pk, people["dan"].pk]
    key = key_of(run_action(ops_client, "set_marketing_action", ids))
    first = confirm_action(ops_client, "set_marketing_action", ids, key)
    ledger_after_first = StatusChange.objects.count()
    usage_after_first = usage()
    second = confirm_action(ops_client, "set_marketing_action", ids, key)
    assert first.status_code == second.status_code == 302
    assert StatusChange.objects.count() == ledger_after_first
    assert StatusChangeRequest.objects.filter(idempotency_key=key).count() == 1
    assert usage() == usage_after_first == (4, 4)
    # The first redirect's message was not read yet: both are shown on the next page.
    assert messages_of(second) == [
        "2 contacts now marketing, 0 pending downgrades cancelled, "
        "0 already marketing. Live count 4, this period's peak 4.",
        "This confirmation was already submitted; nothing more was changed.",
    ]


def test_select_across_runs_as_a_background_job_over_the_whole_filtered_changelist(
    ops_client, people, django_capture_on_commit_callbacks
):
    customers = ContactFactory.create_batch(3, lifecycle_stage="customer")
    query = "?lifecycle_stage=customer"
    one_id = [customers[0].pk]  # the page's checkbox; select_across covers the rest
    page = run_action(ops_client, "set_marketing_action", one_id, query=query, select_across=True)
    assert page.context["preview"].matched == 4  # dan and the three
    assert 'name="select_across" value="1"' in page.content.decode()
    assert 'id="runs-in-background"' in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm_action(
            ops_client,
            "set_marketing_action",
            one_id,
            key_of(page),
            query=query,
            select_across=True,
        )
    job = BulkStatusJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/contacts/bulkstatusjob/{job.pk}/change/"
    assert messages_of(response) == [
        "The change of 4 contacts runs in the background; this page shows its progress."
    ]
    assert job.criteria == {"list_filters": {"lifecycle_stage": "customer"}}
    assert (job.status, job.total, job.done, job.changed) == ("done", 4, 4, 4)
    assert set(Contact.objects.filter(marketing_status=M).values_list("email", flat=True)) == {
        "bob@acme.com",
        "cat@example.com",
        "dan@example.com",
        *(c.email for c in customers),
    }
    assert state(people["ann"]) == (N, None)


def test_double_submit_of_an_all_matching_change_finds_the_same_job(
    ops_client, people, django_capture_on_commit_callbacks
):
    """The "non-marketing" filter reads the clock, and the first job changed who matches it:
    the resubmitted confirmation (same key) finds the first job and changes nothing more."""
    query = "?marketing_status=non_marketing"
    ids = [people["ann"].pk]
    key = key_of(
        run_action(ops_client, "set_marketing_action", ids, query=query, select_across=True)
    )
    with django_capture_on_commit_callbacks(execute=True):
        first = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )
    assert state(people["ann"]) == state(people["dan"]) == (M, None)
    ledger_after_first = StatusChange.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        second = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )
    assert second.status_code == 302
    assert second["Location"] == first["Location"]
    assert BulkStatusJob.objects.count() == 1
    assert StatusChange.objects.count() == ledger_after_first
    assert messages_of(second)[-1] == (
        "This confirmation was already submitted; nothing more was changed."
    )


def test_sales_cannot_run_a_status_action(sales_client, people):
    ids = [people["ann"].pk]
    ledger_before = StatusChange.objects.count()
    response = confirm_action(sales_client, "set_marketing_action", ids, "admin-bulk:forged")
    # Sales has no status action: the POST is refused as "no action" and goes back to the list.
    assert response.status_code == 302
    assert "No action selected." in messages_of(response)
    assert not StatusChangeRequest.objects.filter(idempotency_key="admin-bulk:forged").exists()
    assert state(people["ann"]) == (N, None)
    assert StatusChange.objects.count() == ledger_before


# --- money and guardrails (billing plugs in through the preview hook and ChangeHeld) ------


def subscription_with(**fields) -> Subscription:
    guardrails = {k: fields.pop(k) for k in ("hard_cap", "operation_limit") if k in fields}
    set_guardrails(**guardrails)
    subscription = Subscription.load()
    for name, value in fields.items():
        setattr(subscription, name, value)
    subscription.save()
    return subscription


def test_bulk_preview_shows_the_extra_cost(ops_client, people):
    subscription_with(included_contacts=3)  # live 2; adding ann and dan makes 4: one block
    ids = [people["ann"].pk, people["dan"].pk]

    response = run_action(ops_client, "set_marketing_action", ids)

    cost = response.context["preview"].extra["cost"]
    assert (cost["peak_before"], cost["peak_after"], cost["invoice_delta"]) == (2, 4, 22_500)
    html = response.content.decode()
    assert (
        "This adds 1 overage block: +225.00 USD on this period's invoice "
        "(estimate 800.00 USD → 1,025.00 USD)." in html
    )
    assert 'id="cost-none"' not in html


def test_bulk_preview_says_when_there_is_no_extra_cost(ops_client, people):
    response = run_action(ops_client, "set_marketing_action", [people["ann"].pk])
    html = response.content.decode()
    assert (
        "No extra cost: the new peak stays within the tier (1,997 more fit before the first "
        "overage block). This period's invoice estimate stays at 800.00 USD." in html
    )
    assert 'id="cost-extra"' not in html


def test_bulk_set_marketing_past_the_guardrails_waits_for_approval(ops_client, people):
    subscription_with(operation_limit=1)
    ids = [people["ann"].pk, people["dan"].pk]
    page = run_action(ops_client, "set_marketing_action", ids)
    assert "This change will wait for approval:</strong> it would make 2 contacts marketing" in (
        page.content.decode()
    )
    key = key_of(page)
    ledger_before, usage_before = StatusChange.objects.count(), usage()

    response = confirm_action(ops_client, "set_marketing_action", ids, key)

    assert response.status_code == 302
    approval = PendingApproval.objects.get()
    assert (approval.idempotency_key, approval.new_marketing, approval.status) == (
        key,
        2,
        "pending",
    )
    assert [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)] == [
        (
            "warning",
            f"Nothing was changed yet. Waiting for approval #{approval.pk}: it would make 2 "
            "contacts marketing, more than the per-operation limit of 1. A user who may "
            "approve overage can approve or reject it under Billing › Pending approvals.",
        )
    ]
    assert state(people["ann"]) == state(people["dan"]) == (N, None)
    assert StatusChange.objects.count() == ledger_before
    assert usage() == usage_before
    assert not StatusChangeRequest.objects.filter(idempotency_key=key).exists()

    # Submitting the same confirmation again makes no second approval.
    confirm_action(ops_client, "set_marketing_action", ids, key)
    assert PendingApproval.objects.count() == 1


def test_bulk_set_non_marketing_is_never_held(ops_client, people):
    subscription_with(operation_limit=0, hard_cap=0)
    ids = [people["bob"].pk]
    key = key_of(run_action(ops_client, "set_non_marketing_action", ids))
    response = confirm_action(ops_client, "set_non_marketing_action", ids, key)
    assert state(people["bob"]) == (M, next_update())
    assert not PendingApproval.objects.exists()
    assert messages_of(response)[0].startswith("1 contact non-marketing from")


def test_toggle_past_the_hard_cap_waits_for_approval(ops_client, people):
    subscription_with(hard_cap=2)  # live 2: one more goes past it
    ann = people["ann"]
    ledger_before = StatusChange.objects.count()

    response = ops_client.post(toggle_url(ann.pk), {"operation": "set_marketing"})

    assert response.status_code == 302
    assert response["Location"] == change_url(ann.pk)
    approval = PendingApproval.objects.get()
    assert approval.contact_ids == [ann.pk]
    [message] = get_messages(response.wsgi_request)
    assert message.level_tag == "warning"
    assert str(message) == (
        f"Nothing was changed yet. Waiting for approval #{approval.pk}: it would take the "
        "billable count to 3, past the hard cap of 2. A user who may approve overage can "
        "approve or reject it under Billing › Pending approvals."
    )
    assert state(ann) == (N, None)
    assert StatusChange.objects.count() == ledger_before


def test_toggle_cancelling_a_pending_downgrade_is_not_held(ops_client, people):
    subscription_with(hard_cap=2)  # cat is still counted: re-marking adds nothing
    response = ops_client.post(toggle_url(people["cat"].pk), {"operation": "set_marketing"})
    assert state(people["cat"]) == (M, None)
    assert not PendingApproval.objects.exists()
    assert "was cancelled, at no extra cost" in messages_of(response)[0]


# --- costs on single changes, and the background job's pages --------------------------


def test_set_marketing_at_the_tier_shows_its_cost_and_asks_to_confirm(ops_client, people):
    subscription_with(included_contacts=2)  # live 2 (bob, cat): the account is at its tier
    ann = people["ann"]
    ledger_before, usage_before = StatusChange.objects.count(), usage()

    page = ops_client.post(toggle_url(ann.pk), {"operation": "set_marketing"})

    assert page.status_code == 200
    assert page.templates[0].name == "admin/contacts/contact/status_confirmation.html"
    html = page.content.decode()
    assert (
        "This adds 1 overage block: +225.00 USD on this period's invoice "
        "(estimate 800.00 USD → 1,025.00 USD)." in html
    )
    assert 'name="confirmed" value="yes"' in html
    assert (StatusChange.objects.count(), usage(), state(ann)) == (
        ledger_before,
        usage_before,
        (N, None),
    )

    response = ops_client.post(
        toggle_url(ann.pk), {"operation": "set_marketing", "confirmed": "yes"}
    )

    assert response.status_code == 302
    assert state(ann) == (M, None)
    assert usage() == (3, 3)


def test_set_marketing_within_the_tier_changes_at_once(ops_client, people):
    subscription_with(included_contacts=3)  # live 2: one more still fits
    response = ops_client.post(toggle_url(people["ann"].pk), {"operation": "set_marketing"})
    assert response.status_code == 302
    assert state(people["ann"]) == (M, None)


def test_the_status_panel_keeps_its_unsaved_edits_guard(ops_client, people):
    html = ops_client.get(change_url(people["ann"].pk)).content.decode()
    assert 'id="marketing-status-form"' in html
    assert "You have unsaved changes to this contact." in html


def test_bulk_non_marketing_confirmation_shows_the_saving_and_a_sample(ops_client, people):
    subscription_with(included_contacts=0, block_size=1, block_price=1_000)
    extra = ContactFactory.create_batch(11, first_name="Extra")
    make_marketing(*extra)
    ids = [people["bob"].pk, *[c.pk for c in extra]]

    page = run_action(ops_client, "set_non_marketing_action", ids)

    html = page.content.decode()
    # 13 marketing now (bob, cat, the eleven), cat already pending: 12 → 0 next period.
    assert (
        "From the next period this saves 120.00 USD a month: the invoice at the next "
        "period's opening count goes from 920.00 USD to 800.00 USD (12 → 0 marketing "
        "contacts)." in html
    )
    sample = page.context["sample"]
    assert [c.pk for c in sample] == sorted(ids)[:10]
    assert "The contacts it affects (the first 10 of 12):" in html
    assert 'id="runs-in-background"' not in html


def test_the_job_page_shows_progress_result_and_ledger(
    ops_client, people, django_capture_on_commit_callbacks
):
    query = "?marketing_status=non_marketing"
    ids = [people["ann"].pk]
    key = key_of(
        run_action(ops_client, "set_marketing_action", ids, query=query, select_across=True)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )
    job = BulkStatusJob.objects.get()

    page = ops_client.get(response["Location"])
    progress = ops_client.get(f"/admin/contacts/bulkstatusjob/{job.pk}/progress/").json()

    html = page.content.decode()
    assert '<progress id="job-bar" max="100" value="100"' in html
    assert '<td id="job-changed">2</td>' in html
    ledger_url = f"/admin/contacts/statuschange/?source_type=bulk_action&amp;source_id={job.pk}"
    assert ledger_url in html
    assert [c.email for c in page.context["sample"]] == ["ann@example.com", "dan@example.com"]
    assert 'id="job-resume"' not in html
    assert progress == {
        "status": "done",
        "status_display": "Done",
        "total": 2,
        "done": 2,
        "changed": 2,
        "cancelled": 0,
        "already": 0,
        "held": 0,
        "percent": 100,
        "finished": True,
    }
    ledger = ops_client.get(ledger_url.replace("&amp;", "&"))
    assert {row.contact_id for row in ledger.context["cl"].result_list} == {
        people["ann"].pk,
        people["dan"].pk,
    }


def test_a_job_held_by_the_hard_cap_says_so_and_links_the_approval(
    ops_client, people, django_capture_on_commit_callbacks
):
    subscription_with(hard_cap=3)  # live 2; ann and dan would make 4
    query = "?marketing_status=non_marketing"
    ids = [people["ann"].pk]
    key = key_of(
        run_action(ops_client, "set_marketing_action", ids, query=query, select_across=True)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )

    page = ops_client.get(response["Location"])

    approval = PendingApproval.objects.get()
    html = page.content.decode()
    assert "Waiting for approval" in html
    assert "past the hard cap of 3" in html
    assert f'href="/admin/contacts/pendingapproval/{approval.pk}/change/"' in html
    assert state(people["ann"]) == (N, None)


def test_a_failed_job_is_resumed_from_its_page(
    ops_client, auditor_client, people, django_capture_on_commit_callbacks
):
    from contacts.status.bulk import bulk_status_job_submit

    job, _ = bulk_status_job_submit(
        contacts=Contact.objects.filter(pk=people["ann"].pk),
        operation="set_marketing",
        criteria={"selected": [str(people["ann"].pk)]},
        origin="admin",
        actor=None,
        idempotency_key="stuck",
        enqueue=False,
    )
    BulkStatusJob.objects.filter(pk=job.pk).update(status="failed", message="It stopped.")
    url = f"/admin/contacts/bulkstatusjob/{job.pk}/"
    assert 'id="job-resume"' not in auditor_client.get(url + "change/").content.decode()
    assert auditor_client.post(url + "resume/").status_code == 403
    assert 'id="job-resume"' in ops_client.get(url + "change/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = ops_client.post(url + "resume/")

    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.status, job.changed) == ("done", 1)
    assert state(people["ann"]) == (M, None)
