"""The ``aimesh`` command line: a client of the gateway's REST API (httpx and rich only), one
module per command group."""
