"""Function templates: what canvas nodes do."""
