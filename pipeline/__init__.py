"""Recipes, the resumable run directory, the accuracy-budget search and the built-in demo."""
