"""Local serving: the OpenAI-compatible inference server process of a local deployment, its
engines (llama.cpp on GGUF, transformers with the int8 kernels), and the supervisor that keeps one
process per live local deployment."""
