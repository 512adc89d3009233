"""The built-in agents, one module each: its profile (``PROFILE``), and the parser of
its output (``PARSER``, None for plain text). :mod:`dispatcher.agents.catalog` lists them."""
