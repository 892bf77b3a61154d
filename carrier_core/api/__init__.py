"""The client API: REST under /v1 (`carrier_core.api.app.create_app`), OpenAPI docs at
/docs, and the WebSocket protocol (`carrier_core.api.websocket`).

Nothing is imported here: the WebSocket function imports its protocol without the HTTP
app (FastAPI and the routes), which would double its cold start.
"""
