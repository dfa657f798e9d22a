# One image for the API and the workers. Build: docker build -t onnxsmith .
# By default it carries the training extra (distillation, fine-tuning) with PyTorch's CPU build, taken from
# PyTorch's CPU wheel index: PyPI's torch wheel for Linux is the CUDA build (several GB). Without it:
#   docker build --build-arg WITH_TRAIN=false -t onnxsmith .
FROM python:3.11-slim

ARG WITH_TRAIN=true
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ONNXSMITH_DATA_DIR=/data

RUN groupadd --gid 10001 onnxsmith \
    && useradd --uid 10001 --gid onnxsmith --create-home --shell /usr/sbin/nologin onnxsmith \
    && mkdir -p /data && chown onnxsmith:onnxsmith /data

WORKDIR /app
# The project runs from its source tree (DESIGN.md): migrations and templates are read from here.
COPY pyproject.toml README.md alembic.ini ./
COPY engine ./engine
COPY service ./service
COPY workers ./workers
COPY onnxsmith ./onnxsmith
COPY alembic ./alembic
RUN if [ "$WITH_TRAIN" = "true" ]; then \
         pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0 && pip install -e ".[train]"; \
       else \
         pip install -e .; \
       fi

USER onnxsmith
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
CMD ["onnxsmith", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
