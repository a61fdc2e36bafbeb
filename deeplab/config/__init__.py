"""The experiment configuration: the shared command-line flags (``flags``) and the paper's
table rows (``paper_tables``)."""
