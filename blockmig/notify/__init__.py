"""Notifications when someone must act: a migration awaits approval, failed, or was aborted
by someone other than its requester.

An outbox. The lifecycle calls `outbox.notify_transition` inside the transaction that moves
the migration, which writes one Notification and one Delivery per recipient (an email
address or a webhook endpoint) in that same transaction; nothing is sent there. The sender
(`sender.DeliveryLoop`, a thread of every worker process) claims due deliveries with a
conditional UPDATE, sends them outside any transaction, and retries failures with
exponential backoff until `BLOCKMIG_NOTIFY_MAX_ATTEMPTS`. So a slow, hanging or refusing
mail server or webhook can never delay or fail a migration's transition.
"""
