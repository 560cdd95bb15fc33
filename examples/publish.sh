#!/usr/bin/env sh
# Publish through the HTTP API of a node started with `make run`.
set -eu
URL=${URL:-http://127.0.0.1:${STOMPGATE_PORT:-8080}}
KEY=${KEY:-dev-api-key}

curl -sS -X POST "$URL/api/send-to-user" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"user": "bob", "destination": "/queue/chat", "payload": {"from": "backend", "content": "hello bob"}}'
echo
curl -sS -X POST "$URL/api/publish" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d '{"destination": "/topic/news", "payload": "hello everyone"}'
echo
