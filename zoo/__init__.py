"""The `zoo` command line: thin glue over :mod:`models` and :mod:`inference`."""
