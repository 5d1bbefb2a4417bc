"""audit: see the modules inside."""
