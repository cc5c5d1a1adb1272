"""The node: wires every layer together; CLI, HTTP API and web UI.

    daemon.py        `veil up`: the Node, the composition root of one long-running process per vault
    api.py           its HTTP API (FastAPI under /api/v1): the user's own, token, Host and Origin checked
    routes/          the API's routes, one module per area; blobs.py serves previews at /<sha256>
    selling.py       the seller role: offers, market services, key agents, grants, chain watch, the Cashier
    watching.py      the viewer role: a paid stream opened with a budget, read by plaintext byte range
    feed.py          the feed kept in sync from the user's relays: open subscriptions, a cursor, backoff
    config.py        config.toml over every layer's settings pack, flags over both, each value's source
    settings.py      the node's own settings pack ([node])
    hints.py         HOST:PORT and a magnet's trackers and peer hints
    units.py         amounts as a person writes and reads them
    cards.py         feed cards for playing, and views; what the CLI and API share of posting and engaging
    relays.py        the machine's local relay
    network_demo.py  `veil demo`: every role on loopback
    cli/             the `veil` command line, one module per command group
"""
