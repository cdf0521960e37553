"""Deploy targets. Each ships a verified version folder (and its GGUF where the target takes one)
to one kind of destination, checks its health, moves an alias there, and undoes that on rollback.
Torch-free: they run in the API processes (rollback, undeploy) as well as in deploy jobs."""
