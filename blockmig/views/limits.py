"""Saving a host's copy limits from its policy page (the page itself is blockmig.views.pivot_policy.hypervisor_policy)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from blockmig.errors import Refused
from blockmig.forms.limits import CopyLimitsForm
from blockmig.forms.pivot_policy import AutoPivotForm
from blockmig.limits.setting import hypervisor_set_limits, may_set_limits
from hosts.models import Hypervisor
from hosts.roles import deny


@require_POST
def hypervisor_limits(request: HttpRequest, name: str) -> HttpResponse:
    hypervisor = get_object_or_404(Hypervisor, name=name)
    form = CopyLimitsForm(request.POST, hypervisor=hypervisor)
    if form.is_valid():
        max_copies, roots = form.limits()
        try:
            # Decides and audits, a refusal included (a user who is not an admin gets one).
            hypervisor_set_limits(hypervisor=hypervisor, user=request.user, max_copies=max_copies, roots=roots)
        except Refused as refused:
            if not may_set_limits(request.user):
                deny("hosts.change_hypervisor", "Setting a host's copy limits")
            form.add_error(None, refused.message)
        else:
            messages.success(
                request, f"{hypervisor.name}: copy limits saved; queued migrations that now fit start by themselves."
            )
            return redirect("hypervisor_policy", name=name)
    elif not may_set_limits(request.user):
        deny("hosts.change_hypervisor", "Setting a host's copy limits")
    return render(
        request,
        "blockmig/hypervisor_policy.html",
        {
            "hypervisor": hypervisor,
            "form": AutoPivotForm(initial={"auto_pivot": hypervisor.auto_pivot}),
            "limits_form": form,
            "may_set_policy": may_set_limits(request.user),
        },
        status=400,
    )
