"""Serving a run to other tools: the OpenAI-compatible /v1 API (v1.py), standalone or on the
page's own port."""
