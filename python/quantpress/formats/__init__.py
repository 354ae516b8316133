"""Model file formats (placeholder: the real ``open_model`` front end lives on another branch)."""
