"""The sidecar's control plane: REST API shapes, TwiML, status callbacks, metrics.

``control`` talks only to ``recording`` (DESIGN.md layers): it turns HTTP requests into
``Engine``/``Call``/``Recording`` calls, and recording events into callbacks and metrics.
"""
