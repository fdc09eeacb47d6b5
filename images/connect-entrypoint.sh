#!/bin/sh
# Kafka Connect standalone running Debezium's PostgreSQL connector, for
# lockstep's container world (images/build-debezium.sh). Everything that
# shapes the run comes from the environment; the defaults suit the world's
# names (postgres, kafka1..3). Offsets go to a file in the container, so a
# kill -9 and restart resumes from the last flushed offset like Connect does
# in production. plugin.path is left out on purpose: an empty one makes
# Connect scan its working folder, and the connector is on the classpath.
set -e
: "${BOOTSTRAP:=kafka1:9092,kafka2:9092,kafka3:9092}"
: "${PGHOST:=postgres}"
: "${PGPORT:=5432}"
: "${PGDATABASE:=postgres}"
: "${PGUSER:=postgres}"
: "${TOPIC_PREFIX:=dbz}"
: "${SLOT:=debezium}"
: "${PUBLICATION:=debezium}"
: "${TABLES:=}"
: "${POLL_MS:=500}"
: "${FLUSH_MS:=60000}"
: "${SNAPSHOT_MODE:=initial}"
: "${HEAP:=384m}"
mkdir -p /var/lib/connect
cat >/tmp/worker.properties <<PROPS
bootstrap.servers=$BOOTSTRAP
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
offset.storage.file.filename=/var/lib/connect/offsets
offset.flush.interval.ms=$FLUSH_MS
producer.acks=all
producer.enable.idempotence=true
PROPS
cat >/tmp/connector.properties <<PROPS
name=lockstep-debezium
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
database.hostname=$PGHOST
database.port=$PGPORT
database.user=$PGUSER
database.password=
database.dbname=$PGDATABASE
topic.prefix=$TOPIC_PREFIX
plugin.name=pgoutput
slot.name=$SLOT
publication.name=$PUBLICATION
publication.autocreate.mode=filtered
provide.transaction.metadata=true
decimal.handling.mode=string
time.precision.mode=connect
poll.interval.ms=$POLL_MS
snapshot.mode=$SNAPSHOT_MODE
topic.creation.default.replication.factor=-1
topic.creation.default.partitions=1
PROPS
if [ -n "$TABLES" ]; then
	echo "table.include.list=$TABLES" >>/tmp/connector.properties
fi
exec java -Xmx"$HEAP" -Xms"$HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
	-Dlog4j.configuration=file:/opt/kafka/log4j.properties \
	-cp '/opt/connect/libs/*' org.apache.kafka.connect.cli.ConnectStandalone \
	/tmp/worker.properties /tmp/connector.properties
