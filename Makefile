# Set-up and checks. `make test` and `make demo` work on a fresh machine: they create .venv,
# install the pinned stack (constraints.txt) and Fashion-MNIST, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: test lint demo install data clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Fashion-MNIST: Debian's package where apt-get is available (offline-friendly); otherwise
# the data module falls back to TFDS, which downloads it.
data:
	@if [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		echo "Fashion-MNIST present in $(FASHION_MNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || \
		 (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "Fashion-MNIST not in $(FASHION_MNIST_DIR) and apt-get unavailable: downloading through TFDS"; \
		$(BIN)/python -c "import larq_dysign.training.data as d; d.download_fashion_mnist()"; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install data lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=15 $(PYTEST_ARGS)

# The main job: train a DyResNet18 on Fashion-MNIST, evaluate, export to .tflite, verify, time.
demo: install data
	$(BIN)/python -m larq_dysign.training.demo --out out/demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
