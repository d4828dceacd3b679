# The NovaCron Stream worker image (also runs `novacron topics create` and `novacron simulate`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md topics.yaml ./
COPY streams ./streams
COPY models ./models
RUN pip install --no-cache-dir '.[rocksdb]'
ENV NOVACRON_TOPICS_FILE=/app/topics.yaml \
    NOVACRON_DATA_DIR=/var/lib/novacron \
    NOVACRON_WEB_HOST=0.0.0.0 \
    NOVACRON_WEB_PORT=6066
EXPOSE 6066
USER nobody
ENTRYPOINT ["novacron"]
CMD ["worker"]
