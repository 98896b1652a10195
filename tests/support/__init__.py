"""Helpers shared by test modules: a test module imports from here or uses a conftest fixture, never
another test module."""
