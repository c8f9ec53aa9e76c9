#!/usr/bin/env bash
# Entrypoint of the kafka service in deploy/docker-compose.yml (apache/kafka image): one KRaft node
# whose reachable listeners (INTERNAL for the compose network, HOST for the published port) both
# require SASL/SCRAM-SHA-512. Broker-to-broker and controller traffic stays on the container's
# loopback. The first start formats the storage and creates the SCRAM user named in the env file
# (deploy/.env, written by `make secrets`); later starts keep the data and that credential.
set -euo pipefail

user=${STREAM_RECS_SECURITY_SASL_USERNAME:-}
password=${STREAM_RECS_SECURITY_SASL_PASSWORD:-}
if [[ ! $user =~ ^[A-Za-z0-9._-]+$ ]]; then
  echo "STREAM_RECS_SECURITY_SASL_USERNAME must be set ([A-Za-z0-9._-]); run make secrets" >&2
  exit 2
fi
if [[ ! $password =~ ^[A-Za-z0-9._~+/-]{16,}$ ]]; then
  echo "STREAM_RECS_SECURITY_SASL_PASSWORD must be 16 or more of [A-Za-z0-9._~+/-]; run make secrets" >&2
  exit 2
fi
: "${CLUSTER_ID:?CLUSTER_ID must be set (a base64 UUID)}"

kafka_home=${KAFKA_HOME:-/opt/kafka}
data_dir=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
bind=${KAFKA_BIND_ADDRESS:-0.0.0.0}  # the SASL listeners' address inside the container
internal_host=${KAFKA_INTERNAL_HOST:-kafka}  # the name other containers reach it by
internal_port=${KAFKA_INTERNAL_PORT:-9092}
host_name=${KAFKA_HOST_NAME:-localhost}  # the name clients on the host reach it by
host_port=${KAFKA_HOST_PORT:-29092}
broker_port=${KAFKA_BROKER_PORT:-19092}  # loopback only: this node's own clients, the healthcheck
controller_port=${KAFKA_CONTROLLER_PORT:-9093}  # loopback only

properties=$(mktemp "${TMPDIR:-/tmp}/server.XXXXXX.properties")
jaas="org.apache.kafka.common.security.scram.ScramLoginModule required;"
cat > "$properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${controller_port}
controller.listener.names=CONTROLLER
listeners=INTERNAL://${bind}:${internal_port},HOST://${bind}:${host_port},BROKER://127.0.0.1:${broker_port},CONTROLLER://127.0.0.1:${controller_port}
advertised.listeners=INTERNAL://${internal_host}:${internal_port},HOST://${host_name}:${host_port},BROKER://127.0.0.1:${broker_port}
listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=BROKER
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=${jaas}
listener.name.host.scram-sha-512.sasl.jaas.config=${jaas}
log.dirs=${data_dir}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF

"$kafka_home/bin/kafka-storage.sh" format --ignore-formatted --cluster-id "$CLUSTER_ID" \
  --config "$properties" --add-scram "SCRAM-SHA-512=[name=${user},password=${password}]"
exec "$kafka_home/bin/kafka-server-start.sh" "$properties"
