"""The storage seam: the backend API, backend registry, config base classes."""
