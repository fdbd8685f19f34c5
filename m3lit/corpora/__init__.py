"""Corpora that plug into the training core: each is a folder here and a config in ``configs/``.

A corpus builds its data into the cache and fills a run's data, tokenizer and evaluation paths before
anything is instantiated (:mod:`m3lit.corpora.prepare`). The training core never imports this package.
"""

#: Config keys the corpora replaced, and the new way: ``m3lit.config.corpus`` names it when an old config
#: (a YAML file or a command-line override) still uses one.
RETIRED_KEYS = {
    "bench": "a corpus block: corpus=bible (its options: corpus.spec, corpus.mine, corpus.stage2)",
    "data.demo": "corpus=demo (configs/corpus/demo.yaml)",
    "data.demo_dir": "corpus.dir, with corpus=demo",
}
