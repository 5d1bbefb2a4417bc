"""measure: see the modules inside."""
