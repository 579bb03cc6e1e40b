"""The API's views: thin, like the pages', one module per resource (account and tokens,
inventory, migrations, audit, plans) over what they share (base). Reads come from the
selectors the pages use; every write goes through blockmig.lifecycle (which decides and
audits each refusal), blockmig.plans or blockmig.api.tokens. Each view runs with
blockmig.audit.AUDIT_VIA naming the token (or the console session), so the audit trail says
the action came through the API."""
