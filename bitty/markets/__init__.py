"""Markets: instruments and exchange listings."""
