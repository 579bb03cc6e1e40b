"""Reading hypervisors through the adapter and storing what they say (the inventory).

Callers import from the module that holds the name:
  hypervisor  hypervisor_sync (one host: refused, read, failure recorded) and SyncResult
  fleet       fleet_sync: many hosts in a bounded thread pool; hypervisors_to_sync
  store       what one read stores: domains upserted, disks and chains replaced, host facts
  bulk        multi-row INSERT/upsert and chunked deletes within the database's parameter limit
"""
