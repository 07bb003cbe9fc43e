"""The REST API under /api/ (django-ninja: the OpenAPI schema at /api/openapi.json, docs at /api/docs).

A way in like the pages: every read through `spawner.selectors`, every write through
`spawner.services` with the signed-in person (or a token's person) as the actor.
"""
