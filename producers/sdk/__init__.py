"""The HTTP SDK's parts: each API route as a call (``calls``), and its errors and retry
policy (``errors``). Users import the clients from ``producers.client``."""
