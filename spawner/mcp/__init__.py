"""Spawner as an MCP server: an agent plans, launches, follows, cancels and retries batches and reads
their combined result through tools (`tools`), over streamable HTTP at /mcp with a personal API token
(`http`, mounted in spawner.asgi) or over stdio (`manage.py spawner_mcp`). The tools call the same
services and selectors as the REST API, with the same token scopes."""
