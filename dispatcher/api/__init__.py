"""The REST face: a FastAPI app over the service, which it knows by type only."""
