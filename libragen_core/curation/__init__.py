"""Data curation: automatic filters over decoded clips and captions, then a manual review page."""
