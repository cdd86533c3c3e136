"""The `interplab` command line: a thin shell that parses options and calls a study."""
