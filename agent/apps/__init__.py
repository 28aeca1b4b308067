"""Voice applications the agent answers itself: see ``runtime``."""
