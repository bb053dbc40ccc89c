"""The HTTP surface: routes, pages, content negotiation, the browser UI."""
