"""intake: see the modules inside."""
