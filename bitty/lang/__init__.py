"""The expression language: JMESPath with bitty's functions, compiled to Python."""
