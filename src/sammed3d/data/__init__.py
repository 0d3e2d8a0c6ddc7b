"""Data: dataset layouts, curation, transforms and training datasets."""
