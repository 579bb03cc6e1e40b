"""A host's pivot policy page (`/hosts/<name>/policy/`): auto-pivot is set only here, through
`lifecycle.hypervisor_set_auto_pivot`, which audits it. The copy limits on the same page
post to blockmig.views.limits.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from blockmig import lifecycle
from blockmig.errors import Refused
from blockmig.forms.limits import CopyLimitsForm
from blockmig.forms.pivot_policy import AutoPivotForm
from hosts.models import Hypervisor
from hosts.roles import deny


def hypervisor_policy(request: HttpRequest, name: str) -> HttpResponse:
    hypervisor = get_object_or_404(Hypervisor, name=name)
    may_set = request.user.has_perm("hosts.change_hypervisor")
    if request.method == "POST":
        form = AutoPivotForm(request.POST)
        if not form.is_valid() and not may_set:
            deny("hosts.change_hypervisor", "Setting a host's pivot policy")
        if form.is_valid():
            enabled = form.cleaned_data["auto_pivot"]
            try:
                # The lifecycle refuses (and audits) a user who may not set the policy.
                lifecycle.hypervisor_set_auto_pivot(hypervisor=hypervisor, user=request.user, enabled=enabled)
            except Refused as refused:
                if not may_set:
                    deny("hosts.change_hypervisor", "Setting a host's pivot policy")
                messages.error(request, refused.message)
            else:
                messages.success(
                    request,
                    f"{hypervisor.name}: "
                    + ("pivots automatically when ready." if enabled else "every pivot needs an approver again."),
                )
            nxt = request.POST.get("next", "")
            if url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}):
                return redirect(nxt)
            return redirect("hypervisor_policy", name=name)
    else:
        form = AutoPivotForm(initial={"auto_pivot": hypervisor.auto_pivot})
    return render(
        request,
        "blockmig/hypervisor_policy.html",
        {
            "hypervisor": hypervisor,
            "form": form,
            "limits_form": CopyLimitsForm(hypervisor=hypervisor),
            "may_set_policy": may_set,
        },
    )
