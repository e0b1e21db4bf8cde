"""``KafkaSecurity``: parsed from Kafka-named variables, validated, and turned into the kwargs of
aiokafka and Faust; the local broker's SASL_SSL ``server.properties``."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import faust
import pytest

from gateway.settings import GatewaySettings
from infra.broker import server_properties
from infra.kafka_client import PLAINTEXT, KafkaSecurity
from infra.settings import BrokerSettings, InfraSettings
from infra.tls import TlsFiles, make_tls
from pipeline.sessions.settings import SessionsSettings
from pipeline.settings import WorkerSettings

SCRAM_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_MECHANISM": "scram-sha-512",
    "KAFKA_SASL_USERNAME": "svc",
    "KAFKA_SASL_PASSWORD": "s3cret-value",
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def test_nothing_set_is_plaintext_and_leaves_every_client_as_it_was() -> None:
    security = KafkaSecurity.from_env({})
    assert security == PLAINTEXT
    assert security.client_kwargs() == {}
    assert security.faust_kwargs("127.0.0.1:9092") == {
        "broker": "kafka://127.0.0.1:9092",
        "broker_credentials": None,
    }


def test_every_process_settings_object_reads_the_same_kafka_names(tls: TlsFiles) -> None:
    env = {**SCRAM_ENV, "KAFKA_SSL_CAFILE": str(tls.ca), "TOKENLOG_GATEWAY_SECRET": "x" * 32}
    expected = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "svc", "s3cret-value", str(tls.ca))
    assert GatewaySettings.from_env(env).kafka_security == expected
    assert WorkerSettings.from_env(env).kafka_security == expected
    assert SessionsSettings.from_env(env).kafka_security == expected
    assert InfraSettings.from_env(env).security == expected


def test_sasl_ssl_gives_aiokafka_a_verifying_context_and_the_credentials(tls: TlsFiles) -> None:
    security = KafkaSecurity.from_env({**SCRAM_ENV, "KAFKA_SSL_CAFILE": str(tls.ca)})
    kwargs = security.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret-value",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert any("tokenlog local Kafka CA" in str(ca["subject"]) for ca in context.get_ca_certs())


@pytest.mark.parametrize(
    ("protocol", "keys"),
    [
        ("SSL", {"security_protocol", "ssl_context"}),
        (
            "SASL_PLAINTEXT",
            {"security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"},
        ),
    ],
)
def test_tls_only_and_sasl_only_give_only_their_own_kwargs(protocol: str, keys: set[str]) -> None:
    env = {**SCRAM_ENV, "KAFKA_SECURITY_PROTOCOL": protocol, "KAFKA_SASL_MECHANISM": "PLAIN"}
    kwargs = KafkaSecurity.from_env(env).client_kwargs()
    assert set(kwargs) == keys
    assert kwargs["security_protocol"] == protocol
    if "sasl_mechanism" in keys:
        assert kwargs["sasl_mechanism"] == "PLAIN"


def test_faust_gets_sasl_credentials_with_the_tls_context_or_tls_alone(tls: TlsFiles) -> None:
    sasl = KafkaSecurity.from_env({**SCRAM_ENV, "KAFKA_SSL_CAFILE": str(tls.ca)}).faust_kwargs("h:1,h:2")
    assert sasl["broker"] == "kafka://h:1,h:2"
    credentials = sasl["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (credentials.username, credentials.password) == ("svc", "s3cret-value")
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert "s3cret" not in repr(credentials)
    only_tls = KafkaSecurity("SSL", ssl_cafile=str(tls.ca)).faust_kwargs("h:1")["broker_credentials"]
    assert isinstance(only_tls, faust.SSLCredentials)
    assert only_tls.protocol.value == "SSL"


def test_the_password_is_in_no_repr_and_env_round_trips() -> None:
    security = KafkaSecurity.from_env(SCRAM_ENV)
    assert "s3cret" not in repr(security)
    assert "s3cret" not in security.describe()
    assert "s3cret" not in repr(WorkerSettings.from_env(SCRAM_ENV))
    assert KafkaSecurity.from_env(security.env()) == security
    assert PLAINTEXT.env() == {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        ({**SCRAM_ENV, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM must be one of"),
        ({**SCRAM_ENV, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "k.pem"}, "without KAFKA_SSL_CERTFILE"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaSecurity.from_env(env)


def test_the_secured_local_broker_has_no_listener_without_authentication(
    tls: TlsFiles, tmp_path: Path
) -> None:
    settings = BrokerSettings(port=1234, controller_port=1235, security="sasl_ssl", proxied=((1236, 1237),))
    secret = "pw"  # noqa: S105 - a fixture value, not a credential
    props = server_properties(settings, tmp_path, tls=tls, sasl_password=secret)
    assert props["listeners"] == (
        "SASL_SSL://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235,PROXIED0://127.0.0.1:1236"
    )
    protocols = dict(pair.split(":") for pair in props["listener.security.protocol.map"].split(","))
    assert protocols == {"SASL_SSL": "SASL_SSL", "PROXIED0": "SASL_SSL", "CONTROLLER": "SASL_PLAINTEXT"}
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert 'user_controller="pw"' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert (
        props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    )
    for name in ("sasl_ssl", "proxied0"):
        jaas = props[f"listener.name.{name}.scram-sha-512.sasl.jaas.config"]
        assert re.fullmatch(r'\S+ScramLoginModule required username="tokenlog" password="pw";', jaas)
    assert props["ssl.keystore.location"] == str(tls.keystore)
    assert props["ssl.truststore.location"] == str(tls.ca)
    plain = server_properties(BrokerSettings(port=1234, controller_port=1235), tmp_path)
    assert "sasl.enabled.mechanisms" not in plain
    assert plain["inter.broker.listener.name"] == "PLAINTEXT"


def test_the_local_broker_security_setting_is_checked() -> None:
    assert BrokerSettings.from_env({"TOKENLOG_KAFKA_SECURITY": "SASL_SSL"}).security == "sasl_ssl"
    with pytest.raises(ValueError, match="TOKENLOG_KAFKA_SECURITY must be plaintext or sasl_ssl"):
        BrokerSettings.from_env({"TOKENLOG_KAFKA_SECURITY": "ssl"})
