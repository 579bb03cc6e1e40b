"""Every write to a migration goes through these functions.

Each commits the new state and its audit event in one transaction, then publishes the
change to the channel layer on commit (blockmig.publish), so a browser never sees a state
the database does not have.

CONTRACT (implemented by the engine; the UI codes against these names):

    @dataclass(frozen=True)
    class DiskRequest: target: str; destination: str

    migration_request(*, user, hypervisor, domain_uuid: str, disks: list[DiskRequest],
                      mode="shallow", dest_format="qcow2", reuse_destination=False,
                      bandwidth_mib=0, synchronous_writes=False,
                      granularity=None, buf_size=None) -> Migration
        runs preflight synchronously (clear Refused on any problem, nothing changed),
        creates the row + audit "requested", enqueues the background job, returns at once.
    migration_approve(*, migration, user) -> Migration      # approver, not the requester
    migration_abort(*, migration, user) -> Migration        # operator/approver, before pivot
    migration_set_bandwidth(*, migration, user, bandwidth_mib: int) -> Migration
    hypervisor_set_auto_pivot(*, hypervisor, user, enabled: bool) -> None   # admin
All raise blockmig.errors.Refused with a message that names what to fix.
"""
