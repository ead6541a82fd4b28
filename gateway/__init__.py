"""Listeners, auth, configuration, CLI and service assembly."""
