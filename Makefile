# Two commands for a newcomer (see README): `make demo` and `make test`.
# Everything else here is what those two need on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint system-deps kafka-jars venv clean

demo: venv system-deps kafka-jars
	$(PY) deploy/demo/demo.py

test: venv system-deps kafka-jars lint
	$(PY) -m pytest -q -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Java 17 and Maven run the local Kafka broker; WordNet is the offline text set.
system-deps:
	@command -v java >/dev/null && command -v mvn >/dev/null && test -f /usr/share/wordnet/data.noun || { \
	  echo "installing system packages (java, maven, wordnet-base) with apt-get"; \
	  apt-get update -q && apt-get install -y -q openjdk-17-jre-headless maven wordnet-base; }

kafka-jars: venv
	$(PY) deploy/kafka/broker.py fetch

clean:
	rm -rf $(VENV) .cache var
