#!/usr/bin/env bash
# Starts deploy/compose: Redis, three relays and HAProxy. On first use it writes .env (the relay secrets) and
# certs/haproxy.pem (a self-signed certificate for localhost); both stay out of git. Extra arguments go to
# `docker compose up` (e.g. -d).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f .env ]; then
  umask 077
  {
    echo "SWITCHBOARD_SECRET=$(openssl rand -base64 32)"
    echo "SWITCHBOARD_CLUSTER_SECRET=$(openssl rand -base64 32)"
  } > .env
  echo "wrote .env; mint tokens with: env \$(cat $(pwd)/.env | grep SWITCHBOARD_SECRET) switchboard token ..."
fi
if [ ! -f certs/haproxy.pem ]; then
  mkdir -p certs
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout certs/key.pem -out certs/cert.pem 2>/dev/null
  cat certs/cert.pem certs/key.pem > certs/haproxy.pem
  chmod 0644 certs/haproxy.pem # read by HAProxy's own user in its container
  echo "wrote certs/haproxy.pem (self-signed for localhost; agents: SSL_CERT_FILE=$(pwd)/certs/cert.pem)"
fi
exec docker compose up --build "$@"
