"""The command line: thin Typer commands over the API client."""
