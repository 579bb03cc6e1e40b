"""The migration engine: drives one claimed migration to a terminal state against the real
block jobs. The entry point is `blockmig.engine.driver.Driver` (blockmig.worker runs one per
claim); the layers it is built from, each one concern:

- `base`: the driver's state, its lease (heartbeat, `confirm_lease`) and its fenced writes;
- `checks`: what the host says (domain gone or stopped, why a job vanished, which kind of
  destination, whether it is still the one the copy began with);
- `start`: requested / preflight / queued → copying (definition saved, blockCopy per disk);
- `monitor`: copying ⇄ ready (progress, bandwidth, readiness, auto and plan pivots);
- `pivot`: pivoting → completed (pivot, definition restored, verification);
- `undo`: abort and the cleanup after a failure;
- `driver`: the loop over connections, outages and states.
"""
