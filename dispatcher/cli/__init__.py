"""The command line: thin Typer commands over the API client.

Every ``dispatcher`` process starts here, the daemon's too (``dispatcher serve``), so what
this package imports is paid by each CLI call: commands that only talk HTTP to the daemon
import neither the API, the store nor the MCP SDK (tests/test_cli_imports.py).
"""

import sys

# `import httpx` also imports httpx's own command line (httpx._main: click, rich and
# pygments, about 0.1 s of CPU) whenever those are installed, as they are here (typer
# brings rich). Nothing here runs that command line; with this entry the import fails and
# httpx goes on without it, as it does where they are not installed.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
