"""The training service: Custom Vision's Training API (projects, tags, images, regions,
iterations, performance, publish, quick test, export) over SQLite and a local image store.

Nothing is imported here; :func:`falconet.server.service.app.create_service_app` builds the app.
"""
