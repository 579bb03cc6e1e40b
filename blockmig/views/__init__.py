"""The migration app's pages, one module per page (or per group of posts on one page):

- `actions`: which actions a user may take on a migration (`available_actions`), from the
  lifecycle's own rules (blockmig.states), so a page does not offer a button that cannot work;
- `migration`: one migration's page, `migration_context` (what its live fragments render
  from), and its approve, abort and bandwidth posts;
- `request_form`: the request form pages (one disk, or a domain's disks);
- `dashboard`: the dashboard and its migrations block;
- `listing`: the migrations list;
- `pivot_policy`: a host's pivot policy page (its copy limits post to blockmig.views.limits);
- `limits`: a host's copy limits, posted from the pivot policy page;
- `plans`: evacuation plans: new (evacuate), list, one plan and its actions, its window;
- `acting`: how a page runs an action on a migration or a plan (refusals, 403, messages);
- `audit_trail`: the audit trail and its CSV/JSON export.

Views stay thin: reads come from `blockmig.selectors`, writes go through
`blockmig.lifecycle`, which decides and audits every refusal; its `Refused.message` is
what the person sees. Callers import from the module that defines the name; this package
imports nothing.
"""
