"""Helpers the tests share: writing data in the datasets' on-disk formats, running the CLI."""
