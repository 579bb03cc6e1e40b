"""Push committed changes to browsers over the channel layer.

The engine and lifecycle call these from transaction.on_commit; the live console turns
them into HTML fragments (issue 4).
"""

import logging

log = logging.getLogger(__name__)


def migration_changed(migration_id: int) -> None:
    """A migration's state, progress or timeline changed and is committed."""
    log.debug("migration %s changed", migration_id)
