# Forgeline application image: the API (default command) and worker.py (compose overrides it).
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /usr/local/bin/

# git: cloning repositories in activities. No Docker CLI: the Docker SDK talks to DOCKER_HOST.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1

WORKDIR /app

# Dependencies first (cached layer), then the project itself. No dependency group: neither the
# dev tools nor the embedded Temporal/PostgreSQL wheels belong in production.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-default-groups --no-install-project

COPY alembic.ini worker.py ./
COPY forgeline ./forgeline
COPY api ./api
COPY activities ./activities
COPY core ./core
COPY infra ./infra
COPY workflows ./workflows
COPY db ./db
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-default-groups

RUN useradd --system --uid 10001 --create-home --home-dir /home/forgeline forgeline \
    && mkdir -p /app/.data \
    && chown forgeline:forgeline /app/.data
USER forgeline

ENV FORGELINE_ENVIRONMENT=production \
    FORGELINE_API_HOST=0.0.0.0 \
    FORGELINE_DATA_DIR=/app/.data
EXPOSE 8000

# FORGELINE_API_WORKERS worker processes (default: one per CPU core the container may use).
CMD ["python", "-m", "forgeline.api_server", "--host", "0.0.0.0", "--port", "8000"]
