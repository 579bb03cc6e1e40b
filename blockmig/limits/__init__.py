"""Copy limits per host and per storage root, and the queue of migrations they hold back.
Each module one concern:

- `rules`: whether a migration may start its copy now (the host's usage, the gates and
  conditions, its Wait: place and reason in the queue) and how fast each copy may go; only
  reads. Its contract is at the top of that module.
- `setting`: an admin sets a host's limits (bounds, the audited change).
- `queue_push`: telling a host's queue that what it waits for changed (workers woken at
  once, the queued pages pushed at most every QUEUE_PUSH_EVERY seconds).
"""
