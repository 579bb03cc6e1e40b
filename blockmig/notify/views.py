"""Admin pages for notifications: deliveries with their status, webhook endpoints.
Thin: reads from blockmig.notify.selectors, writes through blockmig.notify.endpoints."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from blockmig.notify import endpoints, selectors
from blockmig.notify.forms import DeliveryFilterForm, WebhookEndpointForm
from blockmig.notify.models import Delivery, WebhookEndpoint
from hosts.roles import deny
from hosts.views import permission_required

DELIVERIES_PER_PAGE = 50


@permission_required("notify.view_delivery")
def deliveries(request: HttpRequest) -> HttpResponse:
    form = DeliveryFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    rows = selectors.deliveries(status=filters.get("status", ""), channel=filters.get("channel", ""))
    page = Paginator(rows, DELIVERIES_PER_PAGE).get_page(request.GET.get("page"))
    for delivery in page.object_list:
        # Times as datetimes, so the page shows them in the reader's timezone like the rest.
        delivery.attempt_log = [{**entry, "at": parse_datetime(entry.get("at", ""))} for entry in delivery.history]
    return render(
        request,
        "blockmig/deliveries.html",
        {
            "form": form,
            "page": page,
            "filtered": any(filters.values()),
            "trouble": selectors.delivery_trouble(),
            "may_retry": request.user.has_perm("notify.change_delivery"),
            "may_manage": request.user.has_perm("notify.view_webhookendpoint"),
        },
    )


@require_POST
@permission_required("notify.change_delivery")
def delivery_retry(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(Delivery, pk=pk)
    if delivery.status != Delivery.Status.FAILED:
        messages.error(request, f"Delivery {pk} is {delivery.get_status_display().lower()}: only a failed one can be retried.")
    else:
        endpoints.delivery_retry(user=request.user, delivery=delivery)
        messages.success(
            request, f"Delivery {pk} to {delivery.recipient_name or delivery.recipient} will be tried again shortly."
        )
    return redirect("notification_deliveries")


@permission_required("notify.view_webhookendpoint")
def webhooks(request: HttpRequest) -> HttpResponse:
    may_add = request.user.has_perm("notify.add_webhookendpoint")
    if request.method == "POST":
        if not may_add:
            deny("notify.add_webhookendpoint")
        form = WebhookEndpointForm(request.POST)
        if form.is_valid():
            endpoint = endpoints.webhook_create(user=request.user, **form.cleaned_data)
            messages.success(request, f"Webhook {endpoint.name} added: its signing secret is on its page.")
            return redirect("notification_webhook", pk=endpoint.pk)
    else:
        form = WebhookEndpointForm()
    return render(
        request,
        "blockmig/notification_webhooks.html",
        {"endpoints": WebhookEndpoint.objects.all(), "form": form, "may_add": may_add},
    )


@permission_required("notify.view_webhookendpoint")
def webhook(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
    may_change = request.user.has_perm("notify.change_webhookendpoint")
    if request.method == "POST":
        if not may_change:
            deny("notify.change_webhookendpoint")
        form = WebhookEndpointForm(request.POST, endpoint=endpoint)
        if form.is_valid():
            endpoints.webhook_update(user=request.user, endpoint=endpoint, **form.cleaned_data)
            messages.success(request, f"Webhook {form.cleaned_data['name']} saved.")
            return redirect("notification_webhook", pk=endpoint.pk)
    else:
        form = WebhookEndpointForm(
            endpoint=endpoint,
            initial={"name": endpoint.name, "url": endpoint.url, "enabled": endpoint.enabled, "events": endpoint.events},
        )
    recent = endpoint.deliveries.select_related("notification").order_by("-id")[:10]
    return render(
        request,
        "blockmig/notification_webhook_form.html",
        {
            "endpoint": endpoint,
            "form": form,
            "may_change": may_change,
            "may_delete": request.user.has_perm("notify.delete_webhookendpoint"),
            "recent": recent,
        },
    )


@require_POST
@permission_required("notify.change_webhookendpoint")
def webhook_test(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
    outcome = endpoints.webhook_test(user=request.user, endpoint=endpoint)
    if outcome.ok:
        messages.success(request, f"{endpoint.name} answered HTTP {outcome.status} to a signed test POST.")
    else:
        messages.error(request, f"{endpoint.name} did not take the test POST: {outcome.error}")
    return redirect("notification_webhook", pk=endpoint.pk)


@require_POST
@permission_required("notify.delete_webhookendpoint")
def webhook_delete(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
    name = endpoint.name
    endpoints.webhook_delete(user=request.user, endpoint=endpoint)
    messages.success(request, f"Webhook {name} deleted; its past deliveries stay listed.")
    return redirect("notification_webhooks")
