"""Deployment: GGUF export, the deploy targets (local server, Ollama, Hugging Face hub, S3) and the
deployment records and jobs that ship a registered version to them."""
