"""pywharf core: everything that does not depend on a particular storage backend.

Layout (one concept per module):

- ``names``       -- package repository names, project names, distribution filenames.
- ``config``      -- loading and validating the repo config and admin secrets (TOML).
- ``backend``     -- the interface a storage backend implements.
- ``registry``    -- discovery of backends through the ``pywharf.backends`` entry points.
- ``index``       -- the index model: file records, immutable snapshots, TOML (de)serialisation.
- ``local_index`` -- the on-disk local index under ROOT (synced copy + upload journal).
- ``pkg_repo``    -- one configured package repository at run time (backend + index + auth cache).
- ``sync``        -- the background task that keeps local indexes in step with remote ones.
- ``upload``      -- streaming the legacy upload form to a staged file and validating it.
- ``pages``       -- rendering of the PEP 503 HTML pages.
- ``app``         -- the Starlette application (routes, auth, error handling).
- ``serve``       -- running the app under uvicorn (default) or waitress.
- ``cli``         -- the ``pywharf`` command line (fire), including environment mode.
"""

__version__ = "0.3.0"
