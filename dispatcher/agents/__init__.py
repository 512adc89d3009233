"""Agents: the built-in profiles (which argv runs) and reading back what an agent reported."""
