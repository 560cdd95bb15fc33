# The two commands: `make run` (one node on config.yaml) and `make test` (everything).
.PHONY: run test check-config clean

run:
	@scripts/bootstrap.sh run
	.venv/bin/stompgate serve --config config.yaml

test:
	@scripts/bootstrap.sh test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

check-config:
	@scripts/bootstrap.sh run
	.venv/bin/stompgate check-config config.yaml

clean:
	rm -rf .venv tests/js/node_modules .pytest_cache .hypothesis
