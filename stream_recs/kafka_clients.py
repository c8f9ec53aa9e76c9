"""The security settings as Kafka client arguments, in one place, for every client the project runs.

kafka-python and aiokafka take the same keyword names (``security_protocol``, ``ssl_context``,
``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``), so one dictionary serves
both; Faust takes its credentials as an object, built here from the same parts.
"""

from __future__ import annotations

import ssl

from stream_recs.config import Security, Settings

DEFAULT_SASL_MECHANISM = "PLAIN"


def ssl_context(security: Security) -> ssl.SSLContext | None:
    """The TLS context of an SSL or SASL_SSL connection (None for the plaintext protocols)."""
    if security.protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=security.ssl_cafile)
    if security.ssl_certfile:
        context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile)
    return context


def _uses_sasl(security: Security) -> bool:
    return security.protocol.startswith("SASL")


def security_kwargs(security: Security) -> dict[str, object]:
    """Keyword arguments of a kafka-python or aiokafka client (admin, producer, consumer)."""
    kwargs: dict[str, object] = {"security_protocol": security.protocol}
    context = ssl_context(security)
    if context is not None:
        kwargs["ssl_context"] = context
    if _uses_sasl(security):
        kwargs.update(
            sasl_mechanism=security.sasl_mechanism or DEFAULT_SASL_MECHANISM,
            sasl_plain_username=security.sasl_username,
            sasl_plain_password=security.sasl_password,
        )
    return kwargs


def client_kwargs(settings: Settings, bootstrap: str) -> dict[str, object]:
    """``security_kwargs`` and the bootstrap servers: all a client needs to reach the cluster."""
    return {"bootstrap_servers": bootstrap.split(","), **security_kwargs(settings.security)}


def faust_credentials(security: Security):
    """Faust's ``broker_credentials``: SASL credentials (with their TLS context), a TLS context
    alone, or None."""
    context = ssl_context(security)
    if not _uses_sasl(security):
        return context
    import faust

    return faust.SASLCredentials(
        username=security.sasl_username,
        password=security.sasl_password,
        mechanism=security.sasl_mechanism or DEFAULT_SASL_MECHANISM,
        ssl_context=context,
    )


def read_to_end(settings: Settings, bootstrap: str, topic: str, timeout_s: float | None = None):
    """Every record of ``topic``'s partition 0 up to its current end, and that end offset
    (kafka-python, for one-shot readers of the single-partition control topics); None when not
    read in ``timeout_s``."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client_kwargs(settings, bootstrap), enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        consumer.seek_to_beginning(tp)
        records = []
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            if deadline is not None and time.monotonic() > deadline:
                return None
            records.extend(r for r in consumer.poll(timeout_ms=500).get(tp, []) if r.offset < end)
        return records, end
    finally:
        consumer.close()

