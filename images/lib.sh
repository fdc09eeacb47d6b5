# shellcheck shell=bash
# What images/build.sh and images/build-debezium.sh share; they source it
# from the repository's root after setting CACHE.
export DOCKER_BUILDKIT=0 # the classic builder never tries to pull FROM images

say() { printf 'images: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
hash() { sha256sum | cut -c1-12; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# need_docker stops the build when Docker cannot be used, saying why.
need_docker() {
	command -v docker >/dev/null || die "docker not found: apt-get install -y docker.io"
	docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon: start dockerd (see .ci/run)"
	mkdir -p "$CACHE"
}

# fetch_jars POM WHAT copies the dependencies of images/POM-pom.xml from
# Maven Central into $CACHE/POM-libs-<hash of the pom>, once, and sets jars
# to that folder. WHAT says whose jars they are, for the messages.
fetch_jars() {
	jars=$CACHE/$1-libs-$(hash <"images/$1-pom.xml")
	if [ ! -f "$jars/.complete" ]; then
		command -v mvn >/dev/null || die "mvn not found: install Maven"
		say "fetching $2 jars from Maven Central"
		rm -rf "$jars"
		mvn -q -B -f "images/$1-pom.xml" dependency:copy-dependencies -DoutputDirectory="$jars" >"$CACHE/mvn-$1.log" 2>&1 ||
			die "Maven could not fetch $2 jars; see $CACHE/mvn-$1.log"
		touch "$jars/.complete"
	fi
}
