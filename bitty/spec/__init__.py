"""The spec language: loading, validating and compiling exchange specs."""
