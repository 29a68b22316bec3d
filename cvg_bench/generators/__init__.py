"""Text-to-video generator backends (registry kind ``generator``)."""
