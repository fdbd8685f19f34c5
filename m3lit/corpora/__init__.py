"""Corpora that plug into the training core: each is a folder here and a config in ``configs/``.

A corpus builds its data into the cache and fills a run's data, tokenizer and evaluation paths before
anything is instantiated (:mod:`m3lit.corpora.prepare`). The training core never imports this package.
"""
