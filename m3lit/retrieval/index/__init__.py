"""Indexes and rankings: dense, sparse, ColBERT, BM25, their fusion, and the encoded corpus that feeds them."""
