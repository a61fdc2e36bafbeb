"""The experiment configuration: the typed record of a run's whole recipe
(``experiment``: data, model, train and eval sections, each field named after its flag), the
shared command-line flags that fill it in one place (``flags``) and the paper's table rows as
overrides of it (``paper_tables``). Add a setting here: one flag in ``flags`` and one field in
``experiment``."""
