"""The search service: a FastAPI app (HTTP API + web page) over one SearchEngine; see serve/app.py."""

from trafficsearch.serve.app import create_app

__all__ = ["create_app"]
