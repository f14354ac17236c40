//! Kafka (new in twelve; paas-charm has none): bootstrap servers, SCRAM credentials, topic and
//! consumer group prefix as `KAFKA_*`, and the Spring Kafka properties.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, invalid, is_spring, unusable, EnvBuilder};

pub(crate) const SASL_MECHANISM: &str = "SCRAM-SHA-512";

/// The security protocol a client must use: SASL with credentials, SSL with a CA.
pub(crate) fn security_protocol(credentials: bool, tls: bool) -> &'static str {
    match (credentials, tls) {
        (true, true) => "SASL_SSL",
        (true, false) => "SASL_PLAINTEXT",
        (false, true) => "SSL",
        (false, false) => "PLAINTEXT",
    }
}

pub(crate) fn kafka(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let Some(servers) = get(data, "bootstrap-servers").map(str::trim) else {
        return Err(unusable(ctx, "no bootstrap-servers yet"));
    };
    let credentials = match (get(data, "username"), get(data, "password")) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid(ctx, "username is given without a password")),
        (None, Some(_)) => return Err(invalid(ctx, "password is given without a username")),
    };
    let tls_ca = get(data, "tls-ca");
    let protocol = security_protocol(credentials.is_some(), tls_ca.is_some());
    let mut b = EnvBuilder::default();
    b.set("KAFKA_BOOTSTRAP_SERVERS", servers);
    if let Some((user, password)) = credentials {
        b.set("KAFKA_USERNAME", user);
        b.set_secret("KAFKA_PASSWORD", password);
    }
    b.set_opt("KAFKA_TOPIC", get(data, "topic"));
    b.set_opt(
        "KAFKA_CONSUMER_GROUP_PREFIX",
        get(data, "consumer-group-prefix"),
    );
    b.set("KAFKA_SECURITY_PROTOCOL", protocol);
    if credentials.is_some() {
        b.set("KAFKA_SASL_MECHANISM", SASL_MECHANISM);
    }
    b.set_opt("KAFKA_TLS_CA", tls_ca);
    if is_spring(ctx) {
        b.set("spring.kafka.bootstrap-servers", servers);
        b.set("spring.kafka.security.protocol", protocol);
        if let Some((user, password)) = credentials {
            b.set("spring.kafka.properties.sasl.mechanism", SASL_MECHANISM);
            b.set_secret(
                "spring.kafka.properties.sasl.jaas.config",
                format!(
                    "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{}\" password=\"{}\";",
                    jaas_escape(user),
                    jaas_escape(password)
                ),
            );
        }
        b.set_opt(
            "spring.kafka.consumer.group-id",
            get(data, "consumer-group-prefix"),
        );
    }
    Ok(b.finish())
}

fn jaas_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
