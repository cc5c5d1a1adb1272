"""The market: cheques gate delivery and key release; the key agent and its audit log; the
viewer's paid stream.

    messages.py     the market's extension messages on the wire: a sans-IO codec
    actions.py      what the cores ask their drivers to do (Send, Drop, StartTimer, LookUpCover, ...)
    viewer.py       ViewerCore: what a viewer pays whom, which keys it asks of whom and when, when it stops
    seller.py       SellerCore: the upload gate, cheque intake, key releases, grant and lane lookups wanted
    credit.py       credit windows: a payee's books on a viewer, pure bookkeeping
    payer.py        the viewer's cumulative cheques, within a budget
    key_session.py  forward-secret key delivery: ephemeral session keys, sealed and signed deliveries
    key_agent.py    releases slice keys against cheques (takes `now`; appends to its audit log)
    audit.py        the key agent's hash-chained, append-only audit log (a file)
    stream.py       PaidStream: the asyncio driver around ViewerCore, and the viewer's swarm settings
    service.py      MarketService: the asyncio driver around SellerCore on one content
    driver.py       what both drivers share: timers by name, chain calls as supervised work on threads
    lanes.py        opening lanes of the viewer's deposit on chain
    access.py       access sales: grants bought on chain, the keys issued for them
    cashier.py      a payee's cheques kept, cashed in batches, the audit head anchored
    onchain.py      what the market reads off the chain (registry records, cashed floors, watched changes)
    settings.py     every tunable, one frozen dataclass
    errors.py       the market's errors

Sans-IO (no clock, no sockets, no asyncio, no threads): messages.py, actions.py, viewer.py,
seller.py, credit.py, payer.py, key_session.py, settings.py, errors.py. They are fed `now`
and inputs and return actions or answers; the cores are tested without a socket or a sleep
(tests/market/test_viewer_core.py, test_seller_core.py). Two of their collaborators are
given in by the caller and are not pure: the key agent the seller core consults appends
each release to its audit log (a file, written before the keys leave), and the
`paid_before` / `signed_before` callbacks read the node's cheque ledger.
"""
