# Tandem node image. Alone it runs the embedded defaults (`docker run -p 8080:8080
# tandem`): dev profile, embedded PostgreSQL under /data. compose.yaml runs it as
# a cluster node with TANDEM_DATABASE_URL and TANDEM_REDIS_URL instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the server needs: the package sources and the metadata pip reads.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY actors ./actors
COPY runtime ./runtime
COPY client ./client
COPY loadgen ./loadgen
RUN pip install . && rm -rf /src

# The embedded PostgreSQL refuses to run as root, and nothing here needs root.
RUN useradd --system --uid 10001 --home-dir /data --create-home tandem
USER tandem
WORKDIR /data
VOLUME /data

ENV TANDEM_HOST=0.0.0.0 \
    TANDEM_PORT=8080 \
    TANDEM_DATA_DIR=/data
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
# SIGTERM (docker stop) drains connections gracefully within TANDEM_SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tandem"]
CMD ["serve"]
