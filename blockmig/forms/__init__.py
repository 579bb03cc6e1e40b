"""The migration app's forms, one module each:

- `migration_request`: `MigrationRequestForm` (one disk, or several disks of a domain,
  with the shared options) and the destination it suggests;
- `field_errors`: preflight's rules shown as field errors (`as_field_error`,
  `check_destination`); each rule lives in blockmig.preflight;
- `storage`: a host's allowed roots with free space (`storage_roots`) and its block-device
  pools (`block_storage`), as the request and plan forms offer them;
- `bandwidth`: `BandwidthForm`, a running migration's limit;
- `pivot_policy`: `AutoPivotForm`, a host's pivot policy;
- `limits`: `CopyLimitsForm`, a host's copy limits;
- `plan`: `EvacuateForm` and `PlanWindowForm`, an evacuation plan's source, target and window;
- `audit_filter`: `AuditFilterForm`, the audit trail's filters.

Callers import from the module that defines the name; this package imports nothing.
"""
