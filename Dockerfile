# One image for the API and the workers. Build: docker build -t onnxsmith .
# By default it carries the training extra (distillation, fine-tuning) with PyTorch's CPU build, taken from
# PyTorch's CPU wheel index: PyPI's torch wheel for Linux is the CUDA build (several GB). Without it:
#   docker build --build-arg WITH_TRAIN=false -t onnxsmith .
# Where PyTorch's index cannot be reached, put the CPU wheel in deploy/wheels/ and name it:
#   docker build --build-arg TORCH_WHEEL=torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl -t onnxsmith .
# Where python:3.11-slim cannot be pulled, deploy/base-image.sh makes a stand-in: --build-arg BASE_IMAGE=<its tag>.
ARG BASE_IMAGE=python:3.11-slim

# --- build: a virtual environment with the dependencies (the torch wheel and pip's work stay in this stage) ---
FROM ${BASE_IMAGE} AS build
ARG WITH_TRAIN=true
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_WHEEL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY deploy/wheels/ /tmp/wheels/
RUN if [ "$WITH_TRAIN" != "true" ]; then :; \
    elif [ -n "$TORCH_WHEEL" ]; then pip install "/tmp/wheels/$TORCH_WHEEL"; \
    else pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; fi
# the dependencies from pyproject.toml alone: a change of the code does not reinstall them
COPY pyproject.toml deploy/requirements.py ./
RUN python requirements.py pyproject.toml $([ "$WITH_TRAIN" = "true" ] && echo train) > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt "setuptools>=69"

# --- the image: the environment, then the source tree and the project installed into it (a code change rebuilds
# only these last layers, not the copy of the environment) ---
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    ONNXSMITH_DATA_DIR=/data
RUN groupadd --gid 10001 onnxsmith \
    && useradd --uid 10001 --gid onnxsmith --create-home --shell /usr/sbin/nologin onnxsmith \
    && mkdir -p /data && chown onnxsmith:onnxsmith /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The project runs from its source tree (DESIGN.md): migrations and templates are read from here.
COPY pyproject.toml README.md alembic.ini ./
COPY engine ./engine
COPY service ./service
COPY workers ./workers
COPY onnxsmith ./onnxsmith
COPY alembic ./alembic
RUN pip install --no-deps --no-build-isolation -e . && python -c "import onnxsmith, engine, service, workers"

USER onnxsmith
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["onnxsmith", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
