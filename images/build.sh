#!/usr/bin/env bash
# Builds lockstep's container images offline and reproducibly, and only when
# their inputs change:
#   lockstep/debian:<hash>    a Debian bookworm rootfs made by debootstrap (docker import)
#   lockstep/base:<hash>      + Apache Kafka's jars from Maven Central + entrypoints
#                             (PostgreSQL 15, Redis and Kafka all run from it)
#   lockstep/pipeline:<hash>  FROM scratch + the static lockstep binary
# Each is also tagged :current, which the container tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${LOCKSTEP_CACHE:-/var/cache/lockstep}
MIRROR=${LOCKSTEP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=postgresql-15,redis-server,openjdk-17-jre-headless,iproute2,iptables,procps,ca-certificates
# shellcheck source=images/lib.sh
. images/lib.sh
need_docker

# 1. Debian rootfs.
debian_tag=lockstep/debian:$(printf '%s %s' "$SUITE" "$PACKAGES" | hash)
if ! have_image "$debian_tag"; then
	rootfs=$CACHE/rootfs-${debian_tag##*:}
	if [ ! -f "$rootfs/.complete" ]; then
		command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install -y debootstrap"
		say "debootstrap $SUITE with $PACKAGES (a few minutes, once)"
		rm -rf "$rootfs"
		debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
			die "debootstrap failed; see $CACHE/debootstrap.log"
		rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
		touch "$rootfs/.complete"
	fi
	say "importing $debian_tag"
	tar --numeric-owner -C "$rootfs" --exclude=./.complete -c . | docker import - "$debian_tag" >/dev/null
fi

# 2. Kafka jars + entrypoints.
fetch_jars kafka "Apache Kafka's"
base_tag=lockstep/base:$( (echo "$debian_tag"; ls "$jars"; cat images/pg-entrypoint.sh images/kafka-entrypoint.sh images/log4j.properties) | hash)
if ! have_image "$base_tag"; then
	ctx=$(mktemp -d)
	trap 'rm -rf "$ctx"' EXIT
	cp -r "$jars" "$ctx/libs"
	rm -f "$ctx/libs/.complete"
	cp images/pg-entrypoint.sh images/kafka-entrypoint.sh images/log4j.properties "$ctx/"
	cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $debian_tag
COPY libs /opt/kafka/libs
COPY log4j.properties /opt/kafka/log4j.properties
COPY pg-entrypoint.sh /usr/local/bin/lockstep-pg
COPY kafka-entrypoint.sh /usr/local/bin/lockstep-kafka
DOCKERFILE
	say "building $base_tag"
	docker build -q -t "$base_tag" "$ctx" >/dev/null 2>&1 || die "docker build $base_tag failed"
	rm -rf "$ctx"
	trap - EXIT
fi
docker tag "$base_tag" lockstep/base:current

# 3. The pipeline binary, FROM scratch.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$ctx/lockstep" ./cmd/lockstep
pipeline_tag=lockstep/pipeline:$(hash <"$ctx/lockstep")
if ! have_image "$pipeline_tag"; then
	printf 'FROM scratch\nCOPY lockstep /lockstep\nENTRYPOINT ["/lockstep"]\n' >"$ctx/Dockerfile"
	say "building $pipeline_tag"
	docker build -q -t "$pipeline_tag" "$ctx" >/dev/null 2>&1 || die "docker build $pipeline_tag failed"
fi
docker tag "$pipeline_tag" lockstep/pipeline:current
say "ready: $base_tag $pipeline_tag"
