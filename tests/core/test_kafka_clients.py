"""The security settings as client arguments: one description for kafka-python, aiokafka, Faust."""

from __future__ import annotations

import ssl

import faust
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer

from stream_recs.config import Security, Settings
from stream_recs.kafka_clients import client_kwargs, faust_credentials, security_kwargs


def test_plaintext_is_the_protocol_alone():
    assert security_kwargs(Security()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Security()) is None
    assert client_kwargs(Settings(), "a:1,b:2") == {
        "bootstrap_servers": ["a:1", "b:2"], "security_protocol": "PLAINTEXT",
    }


def test_sasl_defaults_to_plain_and_carries_the_user():
    kwargs = security_kwargs(Security(protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p"))
    assert kwargs == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u", "sasl_plain_password": "p",
    }
    scram = Security(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                     sasl_password="p")
    credentials = faust_credentials(scram)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("u", "p")
    assert security_kwargs(scram)["sasl_mechanism"] == "SCRAM-SHA-512"


def test_tls_gives_every_client_the_same_context():
    for protocol in ("SSL", "SASL_SSL"):
        kwargs = security_kwargs(Security(protocol=protocol))
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
        assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert isinstance(faust_credentials(Security(protocol="SSL")), ssl.SSLContext)
    assert faust_credentials(Security(protocol="SASL_SSL")).ssl_context is not None


async def test_both_client_libraries_take_the_arguments():
    """kafka-python and aiokafka accept every keyword (neither connects until asked to)."""
    for security in (Security(), Security(protocol="SASL_SSL", sasl_username="u", sasl_password="p")):
        kwargs = client_kwargs(Settings(security=security), "127.0.0.1:1")
        AIOKafkaConsumer(**kwargs)
        KafkaConsumer(**kwargs, api_version=(2, 8)).close()
