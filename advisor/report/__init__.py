"""report: see the modules inside."""
