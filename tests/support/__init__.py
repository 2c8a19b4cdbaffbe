"""What every test folder shares; the fixtures that use it are in ``tests/conftest.py``.

- ``services``: the Redis and databases a test session owns, and what a missing one does.
- ``processes``: Celery workers and beat as real processes (``start("gpu" | "io+fetch" | ...)``).
- ``stack``: one tenant's client and callback receiver over one database and Redis, with
  the processes started for it.
- ``receivers``: the Standard Webhooks callback receiver (verifies, counts, misbehaves).
- ``servers``: loopback HTTP(S) servers for images, and a throwaway certificate authority.
- ``images``: small PNGs made on the fly.
- ``waiting``: ``wait_for``, the one way a test waits for something to happen.
"""
