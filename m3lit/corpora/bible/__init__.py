"""The Bible benchmark: MIRACL-, MKQA- and MLDR-like tasks and training files from public-domain Bibles."""
