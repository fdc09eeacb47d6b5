#!/bin/sh
# PostgreSQL 15 for lockstep's container world: logical decoding on, trust
# auth on the run's private network, prepared transactions on (two-phase
# commit's participants: pgsource.Prepared, pgstore.Prepared). Data lives in
# the container, so a kill -9 and restart keeps what PostgreSQL made durable,
# prepared transactions included.
set -e
PGDATA=/var/lib/postgresql/data
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$PGDATA" --auth=trust -U postgres >/dev/null
	echo "host all all 0.0.0.0/0 trust" >>"$PGDATA/pg_hba.conf"
	echo "host replication all 0.0.0.0/0 trust" >>"$PGDATA/pg_hba.conf"
fi
exec runuser -u postgres -- /usr/lib/postgresql/15/bin/postgres -D "$PGDATA" \
	-c listen_addresses='*' -c wal_level=logical -c max_replication_slots=20 \
	-c max_wal_senders=20 -c max_connections=200 -c shared_buffers=64MB \
	-c wal_sender_timeout=20s -c max_prepared_transactions=64 "$@"
