# API image (also runs migrations and the maintenance worker): no GPU, CPU-only torch.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch is a dependency of the shared config/engine package; the CPU wheel keeps this image small.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY remix_engine ./remix_engine
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install .

RUN useradd --create-home --uid 1000 remix && mkdir -p /data && chown remix /data
USER remix

EXPOSE 8000
CMD ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
