# syntax=docker/dockerfile:1
# Kasparro image: one image, four roles (api, worker, beat, flower) chosen by the command.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin kasparro
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=1000:1000 . .
USER 1000
EXPOSE 8000
# The API answers 503 when its database is unreachable; other roles override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
  CMD ["python", "docker/healthcheck.py", "api"]
ENTRYPOINT ["docker/entrypoint.sh"]
CMD ["api"]
