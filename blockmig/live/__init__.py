"""The live console: pages that follow the database over a websocket.

    publish.py      what lifecycle functions and the inventory sync call, after the commit
    consumer.py     what every page's socket does: auth re-checks, groups, catch-up, order,
                    coalescing, one frame per audience
    cache.py        renders shared by the sockets of one process
    frames.py       how a frame is rendered: the request, no CSRF token, the header line
    migration.py    /ws/migrations/<id>/          the migration page
    dashboard.py    /ws/dashboard/                the dashboard
    host.py         /ws/hosts/<name>/             what the inventory pages share, and which by the query:
    hypervisor.py     ?q=…&page=…                 the hypervisor page
    domain.py         ?domain=<uuid>              the domain page
    disk.py           ?disk=<pk>                  the disk page
    origin.py, handshake.py, reauth.py            who may open a socket (blockmig.asgi), and keep it

docs/live.md tells the whole path, from a commit to the browser.
"""
