# The two commands in the README. Both set up what they need first (scripts/setup.sh is fast once done).
#   make app    run the explorer (STREAMLIT_ARGS="--server.port 8600" to pass options to streamlit)
#   make test   run the whole test suite (PYTEST_ARGS="-k info -x" to narrow it)
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(ROOT)/.venv/bin/python
# The full CIFAR-10 as JPEGs, shared read-only beside the checkout; tests that need the full set skip without it.
SHARED_ARCHIVE := $(abspath $(ROOT)/../shared/data/cifar10-jpeg.tar.gz)

.PHONY: app test setup

setup:
	@bash scripts/setup.sh app

app:
	@bash scripts/setup.sh app
	cd $(ROOT) && \
	  RESNET_LAB_DATA="$${RESNET_LAB_DATA:-$(if $(wildcard $(SHARED_ARCHIVE)),$(SHARED_ARCHIVE))}" \
	  RESNET_LAB_CACHE="$${RESNET_LAB_CACHE:-$(ROOT)/.cache}" \
	  $(PY) -m streamlit run app/Home.py $(STREAMLIT_ARGS)

# Both use the offline archive when it sits beside the checkout (else torchvision's download), and share one decode
# cache inside the repo (.cache/), so the archive decodes once for the app and the tests together.
# RESNET_LAB_DATA / RESNET_LAB_CACHE already in the environment win. -rs lists every skipped test with its reason.
test:
	@bash scripts/setup.sh test
	cd $(ROOT) && \
	  RESNET_LAB_DATA="$${RESNET_LAB_DATA:-$(if $(wildcard $(SHARED_ARCHIVE)),$(SHARED_ARCHIVE))}" \
	  RESNET_LAB_CACHE="$${RESNET_LAB_CACHE:-$(ROOT)/.cache}" \
	  $(PY) -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)
