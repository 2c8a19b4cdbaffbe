"""The HTTP ingestion API (FastAPI). Imports no torch and no worker code."""

from producers.api.app import create_app

__all__ = ["create_app"]
