# worktree-dispatcher daemon.
#
# This image holds the daemon and git only. The agents it runs (claude, codex,
# aider, gemini, goose) are not included: build your own image FROM this one
# and install the ones you use, e.g.
#
#   FROM worktree-dispatcher:local
#   USER root
#   RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
#       && npm install -g @anthropic-ai/claude-code @openai/codex \
#       && rm -rf /var/lib/apt/lists/*
#   USER dispatcher
#
# Use docker-compose.yml to run it: it publishes the port on 127.0.0.1 only and
# mounts your repos at the same absolute path as on the host.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates bubblewrap \
    && rm -rf /var/lib/apt/lists/*

# Exactly the locked runtime dependencies (pinned, hash-checked; see scripts/lock),
# then the project's wheel (built with the locked hatchling; it carries dispatcher,
# triggers and the migrations folder) without resolving anything again.
WORKDIR /build
COPY requirements.lock requirements-build.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
COPY triggers ./triggers
COPY migrations ./migrations
RUN python -m venv /tmp/build-env \
    && /tmp/build-env/bin/pip install --require-hashes --no-deps -r requirements-build.lock \
    && /tmp/build-env/bin/pip wheel --no-deps --no-build-isolation -w /tmp/wheel . \
    && pip install --no-deps /tmp/wheel/*.whl \
    && pip check \
    && rm -rf /build /tmp/build-env /tmp/wheel

# A cluster worker's start: clone the hub's repos, serve, register them (docs/cluster.md).
COPY docker/cluster-worker /usr/local/bin/dispatcher-cluster-worker

# Non-root user. docker-compose.yml runs the container as the host user's
# uid:gid instead, which may have no passwd entry here: HOME is made writable
# for any uid so agents and git can keep their config there.
RUN useradd --create-home --home-dir /home/dispatcher --uid 1000 --user-group dispatcher \
    && chmod 1777 /home/dispatcher \
    && mkdir -p /state \
    && chown dispatcher:dispatcher /state
ENV HOME=/home/dispatcher \
    DISPATCHER_STATE_DIR=/state

USER dispatcher
WORKDIR /home/dispatcher

# 0.0.0.0 inside the container is what port publishing needs; the compose file
# publishes it on the host's 127.0.0.1 only. Requests still need the token.
EXPOSE 8765
CMD ["dispatcher", "serve", "--host", "0.0.0.0", "--port", "8765"]
