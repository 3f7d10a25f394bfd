"""
Helpers for this project's own tests (not shipped in the package).
"""
