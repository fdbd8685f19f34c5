"""The offline demo corpus: a retrieval task built from the docstrings of Python's standard library."""
