FROM python:3.11-slim

# Production by default: the server refuses to start without DATABASE_URL and JWT_SECRET (it never
# falls back to an embedded database or a generated secret). Apply migrations as a release step:
#   docker run --rm -e DATABASE_URL=... -e JWT_SECRET=... <image> kintsugi-rt migrate
ENV ENVIRONMENT=production \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    KINTSUGI_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY kintsugi_rt ./kintsugi_rt
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home kintsugi && mkdir -p /data && chown kintsugi /data

USER kintsugi
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz')"
STOPSIGNAL SIGTERM
CMD ["kintsugi-rt", "serve"]
