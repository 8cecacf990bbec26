import pytest

from sovereign_sdk import LearnerConfig, SovereignConfigError


def test_reads_what_the_member_sets(env):
    c = LearnerConfig.from_env(env)
    assert (c.run, c.namespace, c.region, c.round, c.rounds) == ("fedavg-mnist", "research", "berlin", 2, 10)
    assert (c.learner_index, c.learners, c.learner) == (1, 4, "learner-0123abcd-1")
    assert c.encoding == "int8-block128"
    assert c.jetstream_domain == "berlin"
    assert c.nats_servers == ("nats://nats.sovereign-system:4222",)
    assert c.refusal_subject == "sovereign.berlin.refusals.research.fedavg-mnist"


@pytest.mark.parametrize(
    ("dtype", "encoding"),
    [
        ("fp32", "fp32"),
        ("bf16", "bf16"),
        ("fp16", "fp16"),
        ("int8", "int8-block128"),
        ("int4", "int4-block64"),
        ("int4-block32", "int4-block32"),
        ("int8-row", "int8-row"),
        (None, "bf16"),
    ],
)
def test_delta_dtype_maps_to_the_wire_encoding(env, dtype, encoding):
    if dtype is None:
        del env["SOVEREIGN_DELTA_DTYPE"]
    else:
        env["SOVEREIGN_DELTA_DTYPE"] = dtype
    assert LearnerConfig.from_env(env).encoding == encoding


def test_every_missing_variable_is_named_at_once(env):
    del env["SOVEREIGN_RUN"]
    env["SOVEREIGN_NATS_URL"] = "  "
    with pytest.raises(SovereignConfigError) as info:
        LearnerConfig.from_env(env)
    assert info.value.reason == "ConfigMissing"
    assert str(info.value).startswith("ConfigMissing: SOVEREIGN_RUN, SOVEREIGN_NATS_URL are not set;")


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SOVEREIGN_RUN", "FedAvg", "SOVEREIGN_RUN='FedAvg' is not a DNS-1123 label"),
        ("SOVEREIGN_ROUND", "11", "at most SOVEREIGN_ROUNDS (10)"),
        ("SOVEREIGN_ROUND", "-1", "an integer ≥ 0"),
        ("SOVEREIGN_ROUNDS", "0", "an integer ≥ 1"),
        ("SOVEREIGN_DELTA_DTYPE", "int2", "fp32, bf16, fp16, int8 or int4"),
        ("SOVEREIGN_NATS_SUBJECT_PREFIX", "sovereign.paris.x", "a subject under sovereign.berlin."),
        ("SOVEREIGN_NATS_URL", "http://x:4222", "nats://host:port"),
        ("SOVEREIGN_LEARNER_NAME", "Learner_0", "a DNS-1123 subdomain"),
        ("SOVEREIGN_JETSTREAM_DOMAIN", "a.b", "a JetStream domain name"),
    ],
)
def test_malformed_values_are_refused_with_the_variable_named(env, name, value, fragment):
    env[name] = value
    with pytest.raises(SovereignConfigError) as info:
        LearnerConfig.from_env(env)
    assert info.value.reason == "ConfigInvalid"
    assert fragment in str(info.value)


def test_nats_credentials_are_user_and_password_or_a_creds_file(env, tmp_path):
    del env["SOVEREIGN_NATS_PASSWORD"]
    with pytest.raises(
        SovereignConfigError, match="^ConfigMissing: SOVEREIGN_NATS_USER and SOVEREIGN_NATS_PASSWORD go together"
    ):
        LearnerConfig.from_env(env)
    creds = tmp_path / "learner.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    env["SOVEREIGN_NATS_PASSWORD"] = "secret"
    env["SOVEREIGN_NATS_CREDS"] = str(creds)
    with pytest.raises(SovereignConfigError, match="^ConfigInvalid: both SOVEREIGN_NATS_USER and SOVEREIGN_NATS_CREDS"):
        LearnerConfig.from_env(env)
    del env["SOVEREIGN_NATS_USER"], env["SOVEREIGN_NATS_PASSWORD"]
    assert LearnerConfig.from_env(env).nats_creds == str(creds)
    env["SOVEREIGN_NATS_CREDS"] = str(tmp_path / "absent.creds")
    with pytest.raises(SovereignConfigError, match="^ConfigInvalid: SOVEREIGN_NATS_CREDS="):
        LearnerConfig.from_env(env)


def test_the_password_never_appears_in_an_error(env):
    env["SOVEREIGN_NATS_URL"] = "bogus"
    with pytest.raises(SovereignConfigError) as info:
        LearnerConfig.from_env(env)
    assert "secret" not in str(info.value)
