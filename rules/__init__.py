"""Shipped rule files (TOML). Rules are data; advisor.decide.rules loads and validates them."""
