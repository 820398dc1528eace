"""Reusable widgets: line plots, thumbnail galleries."""
