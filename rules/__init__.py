"""Shipped rule files (TOML). Rules are data; advisor.rules loads and validates them."""
