"""Storage evacuation plans: every write goes through these functions.

    plan_build(*, user, hypervisor, source_kind, target_root, mode="shallow",
               pivot_policy="each", source_root="", domain_uuids=(), window_start=None,
               window_end=None) -> Plan                        # operator; preflight of the whole plan
    plan_approve(*, plan, user) -> Plan                          # approver, not the author
    plan_continue(*, plan, user) -> Plan                         # approver; an interrupted approval
    plan_discard(*, plan, user) -> Plan                          # a draft nobody will run
    plan_pause(*, plan, user) / plan_resume(*, plan, user) -> Plan   # operator
    plan_abort(*, plan, user) -> Plan                            # aborts each active migration
    plan_set_window(*, plan, user, window_start, window_end) -> Plan

Like blockmig.lifecycle, each commits its state change and audit event in one transaction
and publishes after the commit; each refusal is audited and raised as Refused with a
message that names what to fix. A plan's migrations are ordinary migrations, requested
through `lifecycle.migration_request` (its preflight, its audit) with `plan=` set; the copy
limits and the queue hold them (blockmig.limits, asking blockmig.plans.rules whether the plan
is paused) and the engine pivots them when the plan allows (blockmig.plans.rules).

Each module one concern; callers import from the module that holds the function:

- `build`: plan_build (the host's disks as the inventory saw them, each disk's destination
  and bytes, the draft saved with its audit event);
- `actions`: what is done to a built plan: approve (preflight again, then its migrations
  requested), discard, pause, resume, abort, set_window;
- `recovery`: plan_continue, for a plan left approved by a process that died while
  requesting its migrations (only the disks without one are requested, then it runs);
- `checks`: what a plan must pass: its window, its source and target, and preflight's own
  checks on every disk over one connection (when it is built, and again when approved);
- `recording`: a refused action audited then raised, a plan's audit event, and a move
  through the plan's state machine with its event (what build and actions share);
- `states`: the plan's state machine (pure);
- `building`: which disks a plan takes, their destinations, bytes and free space (pure);
- `rules`: what a plan says about its copies and pivots (paused, window, who approved),
  asked by the limits, the engine and the approval;
- `progress`: a plan's totals and its end when its last migration ends;
- `selectors`: the plans list and one plan's page, read.
"""
