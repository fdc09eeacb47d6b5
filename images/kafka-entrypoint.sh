#!/bin/sh
# One Apache Kafka node in KRaft combined mode (broker + controller) for a
# 3-node cluster: replication factor 3, min.insync.replicas 2, no unclean
# leader election. NODE_ID (1..3) and VOTERS come from the environment;
# EXTERNAL_PORT is the port published on the host's 127.0.0.1, so the harness
# can find partition leaders.
set -e
: "${NODE_ID:?NODE_ID is required}"
: "${VOTERS:=1@kafka1:9093,2@kafka2:9093,3@kafka3:9093}"
: "${CLUSTER_ID:=TG9ja3N0ZXBDbHVzdGVyMQ}"
: "${HEAP:=256m}"
mkdir -p /var/lib/kafka
cat >/tmp/server.properties <<PROPS
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$VOTERS
listeners=PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:19092
advertised.listeners=PLAINTEXT://$(hostname):9092,EXTERNAL://127.0.0.1:${EXTERNAL_PORT:-19092}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=/var/lib/kafka
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
unclean.leader.election.enable=${UNCLEAN:-false}
auto.create.topics.enable=false
PROPS
if [ ! -f /var/lib/kafka/meta.properties ]; then
	java -cp '/opt/kafka/libs/*' -Dlog4j.configuration=file:/opt/kafka/log4j.properties \
		kafka.tools.StorageTool format -t "$CLUSTER_ID" -c /tmp/server.properties >/dev/null
fi
exec java -Xmx$HEAP -Xms$HEAP -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
	-Dlog4j.configuration=file:/opt/kafka/log4j.properties \
	-cp '/opt/kafka/libs/*' kafka.Kafka /tmp/server.properties
