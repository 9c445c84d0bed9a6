#!/bin/sh
# One-shot setup once the server is healthy: the namespace, then our custom search attributes
# (workflows/common/names.py SEARCH_ATTRIBUTES; tests/ops/test_compose.py keeps this list in step with it).
# Safe to re-run: an existing namespace is left alone and re-creating a search attribute with
# the same type is a no-op; the same name with another type fails loudly.
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${TEMPORAL_NAMESPACE:=default}"
# How long closed executions (and their audit trail in history) stay queryable.
: "${TEMPORAL_NAMESPACE_RETENTION:=720h}"
export TEMPORAL_ADDRESS

echo "waiting for Temporal at $TEMPORAL_ADDRESS"
attempt=0
until temporal operator cluster health >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 60 ] || { echo "Temporal never became healthy" >&2; exit 1; }
  sleep 2
done

if temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
  echo "namespace $TEMPORAL_NAMESPACE exists"
else
  temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" \
    --retention "$TEMPORAL_NAMESPACE_RETENTION"
fi

# A namespace just created reaches the frontend's cache a few seconds later ("not found"):
# retry that, and only that.
search_attribute() {
  attempt=0
  while ! out=$(temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" \
    --name "$1" --type "$2" 2>&1); do
    case "$out" in
      *"not found"*) ;;
      *) echo "$out" >&2; exit 1 ;;
    esac
    attempt=$((attempt + 1))
    [ "$attempt" -lt 60 ] || { echo "$out" >&2; exit 1; }
    sleep 1
  done
  echo "search attribute $1 ($2)"
}

search_attribute ModelName Keyword
search_attribute TriggerKind KeywordList
search_attribute LoopStage Keyword
search_attribute RetrainPaused Bool
search_attribute ActiveLoop Keyword
search_attribute RetrainOutcome Keyword
echo "namespace $TEMPORAL_NAMESPACE is ready"
