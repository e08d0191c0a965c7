# Multi-stage build: compile on Debian bookworm, run on bookworm-slim as a
# non-root user. (No Docker engine runs on the development machines; this
# file is kept true to scripts/bootstrap but is not exercised by CI.)
FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libwebsockets-dev libwebsockets-evlib-uv \
      libuv1-dev libhiredis-dev libluajit-5.1-dev libjwt-dev libjansson-dev \
      libssl-dev libcmocka-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build -j"$(nproc)"

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libwebsockets17 libwebsockets-evlib-uv libuv1 libhiredis0.14 \
      libluajit-5.1-2 lua-cjson libjwt0 libjansson4 ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 streamgate
WORKDIR /opt/streamgate
COPY --from=build /src/build/streamgate /usr/local/bin/streamgate
COPY lua ./lua
COPY public ./public
COPY config ./config
USER streamgate
EXPOSE 8080
ENV STREAMGATE_ENV=production
ENTRYPOINT ["/usr/local/bin/streamgate", "--config", "/opt/streamgate/config/streamgate.lua"]
