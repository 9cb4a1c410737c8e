"""Providers create machines and networks; each registers itself by kind in ``base``."""
