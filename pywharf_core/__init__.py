"""pywharf core: everything that does not depend on a particular storage backend.

Grouped by responsibility; each layer imports only the ones listed before it (import-linter
checks it, see pyproject.toml and tests/test_layers.py):

- ``model``   -- names and distribution identity, file records, core metadata, the sidecar.
- ``storage`` -- the storage seam: the adapter API a backend implements (``api``), the
  interface the service talks to (``backend``), config base classes, the backend registry.
- ``index``   -- index document formats, in-memory snapshots, the local copy under ROOT
  (``local``: synced base + journal) and the remote index log (``remote_log``).
- ``service`` -- use cases: the core's package store over an adapter (every storage policy),
  uploads, repositories and their sync, the server's repository set.
- ``http``    -- the Starlette app: routes, pages and their cache, negotiation, upload
  streaming, the browser UI, running under uvicorn or waitress.
- ``cli``     -- the ``pywharf`` command line (fire), including environment mode.
"""

__version__ = "0.3.0"
