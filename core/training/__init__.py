"""Fine-tuning recipe and evaluation that a job's training process runs (see docs/training.md).

config (validated job spec) -> model_loading -> data -> recipe.train -> evaluate; entrypoint is the
process the worker starts. Only `config` is imported by the server; the rest pulls in torch."""
