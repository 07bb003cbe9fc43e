# Spawner for a team server: the web server and the clusters run from this one image
# (see compose.yaml and README "At scale"). Build: docker build -t spawner .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPAWNER_VAR_DIR=/var/lib/spawner \
    SPAWNER_LOG_DIR=/var/lib/spawner/logs \
    SPAWNER_WORKSPACE_DIR=/var/lib/spawner/workspaces \
    SPAWNER_WORKDIR=/work

# git: coding agents run in git worktrees; tini: signals reach the cluster, which drains on SIGTERM.
# Debian's current stable versions of both (security fixes come with a rebuild), so no pin:
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git tini \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 spawner \
    && useradd --system --uid 10001 --gid spawner --home-dir /home/spawner --create-home spawner \
    && mkdir -p /var/lib/spawner/logs /var/lib/spawner/workspaces /srv/spawner-logs /work \
    && chown -R spawner:spawner /var/lib/spawner /srv/spawner-logs /work

WORKDIR /app
COPY pyproject.toml README.md manage.py ./
COPY spawner ./spawner
COPY dashboard ./dashboard
COPY templates ./templates
COPY static ./static
COPY examples ./examples
# Editable: the code stays in /app, where the settings find templates, static files and examples.
RUN pip install -e ".[postgres,redis]"

USER 10001:10001
# Static files are collected into the image (a throwaway key: settings need one to load).
RUN SPAWNER_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0

EXPOSE 8000
ENTRYPOINT ["tini", "--"]
CMD ["python", "manage.py", "serve", "--no-cluster", "--bind", "0.0.0.0", "--port", "8000"]
