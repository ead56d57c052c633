"""Villager Shop: online migration of the villager_shop marketplace and the shop service."""

__version__ = "0.1.0"
