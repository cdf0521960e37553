# The two set-up commands of README.md: `make run` and `make test`. Both install what is missing
# first (scripts/bootstrap.sh).
.PHONY: run test test-all bootstrap generate check-generated bench

bootstrap:
	scripts/bootstrap.sh

# The service with its embedded defaults (private PostgreSQL, gRPC server, Envoy gateway) and a
# short demo against it over REST; stops when the demo ends.
run: bootstrap
	.venv/bin/trainforge demo

# The fast default suite (real PostgreSQL, real Envoy, Triton interpreter); `make test-all` adds
# the tests marked slow.
test: bootstrap check-generated
	.venv/bin/ruff check .
	.venv/bin/pytest -m "not slow and not gpu"

test-all: bootstrap check-generated
	.venv/bin/pytest -m "not gpu"

generate:
	scripts/gen_protos.sh

check-generated:
	scripts/check_generated.sh

bench: bootstrap
	.venv/bin/pytest benchmarks --benchmark-only -p no:randomly
