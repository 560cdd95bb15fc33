# The two commands: `make run` (one node on config.yaml) and `make test` (everything).
.PHONY: run test lint check-config clean

run:
	@scripts/bootstrap.sh run
	.venv/bin/stompgate serve --config config.yaml

test:
	@scripts/bootstrap.sh test
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint:  # what make test checks before the tests: ruff on everything, mypy --strict on stompgate/ and harness/
	@scripts/bootstrap.sh test
	.venv/bin/ruff check .
	.venv/bin/mypy

check-config:
	@scripts/bootstrap.sh run
	.venv/bin/stompgate check-config config.yaml

clean:
	rm -rf .venv tests/js/node_modules stompgate/admin/static/node_modules .pytest_cache .hypothesis
