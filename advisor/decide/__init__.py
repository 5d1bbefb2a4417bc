"""decide: see the modules inside."""
