"""The mini-program's JSON API under ``/api/v1``.

Every endpoint is declared with :func:`handlers.api.base.endpoint`, which
names its request and response schemas (msgspec structs). The same
declaration validates requests, encodes responses and generates the OpenAPI
document, so the document cannot drift from what the handlers accept.
"""
