#!/usr/bin/env bash
# Builds lockstep/debezium, the image of Kafka Connect standalone with
# Debezium's PostgreSQL connector, offline and only when its inputs change:
#   lockstep/debezium:<hash>  FROM lockstep/base:current + the jars of
#                             images/debezium-pom.xml from Maven Central
#                             + images/connect-entrypoint.sh
# It is tagged :current, which the Debezium container tests look for. make
# images and make test (so CI) run it after images/build.sh: from a cold
# cache Maven fetches the 70 jars (36 MB) in about 40 s and the image
# builds in 2 s (measured here). Run images/build.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${LOCKSTEP_CACHE:-/var/cache/lockstep}
# shellcheck source=images/lib.sh
. images/lib.sh
need_docker
base_id=$(docker image inspect -f '{{.Id}}' lockstep/base:current 2>/dev/null) ||
	die "lockstep/base:current is missing: run images/build.sh first"

# 1. Kafka Connect's and Debezium's jars.
fetch_jars debezium "Kafka Connect's and Debezium's"

# 2. The image.
tag=lockstep/debezium:$( (echo "$base_id"; ls "$jars"; cat images/connect-entrypoint.sh) | hash)
if ! have_image "$tag"; then
	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' EXIT
	cp -r "$jars" "$ctx/libs"
	rm -f "$ctx/libs/.complete"
	cp images/connect-entrypoint.sh "$ctx/"
	cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM lockstep/base:current
COPY libs /opt/connect/libs
COPY connect-entrypoint.sh /usr/local/bin/lockstep-connect
DOCKERFILE
	say "building $tag"
	docker build -q -t "$tag" "$ctx" >/dev/null 2>&1 || die "docker build $tag failed"
fi
docker tag "$tag" lockstep/debezium:current
say "ready: $tag"
