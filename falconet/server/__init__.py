"""HTTP servers: the prediction container (``falconet serve``), speaking the Custom Vision routes.

Nothing is imported here: FastAPI, uvicorn and the runtimes load only when a server is built, so
``import falconet`` and ``falconet --help`` stay light. Build the app with
:func:`falconet.server.prediction_app.create_app`.
"""
