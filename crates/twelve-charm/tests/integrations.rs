//! How relation data becomes the app's environment: one test per variable family, per Spring
//! Boot variant, per paas-charm quirk twelve fixes, and per error message. The variable names
//! and values are paas-charm 1.x's (reference/paas-charm.md §2); docs/integrations.md has the
//! same rules as tables.

use indexmap::IndexMap;
use serde_json::{json, Value};
use twelve_charm::integrations::{
    integration_env, log_targets, oauth_options, validate_data, IntegrationContext, IntegrationEnv,
    IntegrationKind, RelationData, RelationDataError,
};
use twelve_project::{Framework, OptionType};

use IntegrationKind as K;

/// Relation data as written in a table row.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn data(pairs: &[(&str, &str)]) -> RelationData {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run_with(
    kind: K,
    framework: Framework,
    endpoint: &str,
    config: &IndexMap<String, Value>,
    pairs: &[(&str, &str)],
) -> Result<IntegrationEnv, RelationDataError> {
    let ctx = IntegrationContext {
        framework,
        app: "web",
        endpoint,
        base_url: "http://web.localhost:8080/",
        config,
    };
    integration_env(kind, &ctx, &data(pairs))
}

fn endpoint_of(kind: K) -> &'static str {
    match kind {
        K::Postgresql => "postgresql",
        K::Mysql => "mysql",
        K::Mongodb => "mongodb",
        K::Redis => "redis",
        K::Valkey => "valkey",
        K::Rabbitmq => "rabbitmq",
        K::S3 => "s3",
        K::Saml => "saml",
        K::Tracing => "tracing",
        K::Smtp => "smtp",
        K::Openfga => "openfga",
        K::Kafka => "kafka",
        K::Oauth => "oidc",
        K::HttpProxy => "http-proxy",
        K::Logging => "logging",
    }
}

fn run(
    kind: K,
    framework: Framework,
    pairs: &[(&str, &str)],
) -> Result<IntegrationEnv, RelationDataError> {
    run_with(kind, framework, endpoint_of(kind), &IndexMap::new(), pairs)
}

/// The env of valid data, as (name, value) pairs in order.
fn env(kind: K, framework: Framework, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    run(kind, framework, pairs)
        .expect("valid data")
        .env
        .into_iter()
        .collect()
}

fn env_map(kind: K, framework: Framework, pairs: &[(&str, &str)]) -> IndexMap<String, String> {
    run(kind, framework, pairs).expect("valid data").env
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Only the Spring properties (names with a dot) of an env.
fn spring_part(env: &IndexMap<String, String>) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.contains('.'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn invalid_reason(r: Result<IntegrationEnv, RelationDataError>) -> String {
    match r {
        Err(RelationDataError::Invalid { reason, .. }) => reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn unusable_reason(r: Result<IntegrationEnv, RelationDataError>) -> String {
    match r {
        Err(RelationDataError::Unusable { reason, .. }) => reason,
        other => panic!("expected Unusable, got {other:?}"),
    }
}

const PG_URI: &str = "postgresql://app:s3cret@db.internal:5432/webdb";

// ---------------------------------------------------------------- databases

#[test]
fn postgresql_uri_becomes_split_fields() {
    // Every urlparse component; empty params/query/fragment stay as "" (paas-charm drops only
    // None), and the database name is the path without its `/`.
    assert_eq!(
        env(K::Postgresql, Framework::Flask, &[("uri", PG_URI)]),
        pairs(&[
            ("POSTGRESQL_DB_CONNECT_STRING", PG_URI),
            ("POSTGRESQL_DB_SCHEME", "postgresql"),
            ("POSTGRESQL_DB_NETLOC", "app:s3cret@db.internal:5432"),
            ("POSTGRESQL_DB_PATH", "/webdb"),
            ("POSTGRESQL_DB_PARAMS", ""),
            ("POSTGRESQL_DB_QUERY", ""),
            ("POSTGRESQL_DB_FRAGMENT", ""),
            ("POSTGRESQL_DB_USERNAME", "app"),
            ("POSTGRESQL_DB_PASSWORD", "s3cret"),
            ("POSTGRESQL_DB_HOSTNAME", "db.internal"),
            ("POSTGRESQL_DB_PORT", "5432"),
            ("POSTGRESQL_DB_NAME", "webdb"),
        ])
    );
}

#[test]
fn database_parts_build_a_url_on_the_first_endpoint_with_the_app_name_as_database() {
    let parts = [
        ("username", "u"),
        ("password", "p"),
        ("endpoints", "h1:1234,h2:1234"),
    ];
    for (kind, expected) in [
        (
            K::Postgresql,
            (
                "POSTGRESQL_DB_CONNECT_STRING",
                "postgresql://u:p@h1:1234/web",
            ),
        ),
        (
            K::Mysql,
            ("MYSQL_DB_CONNECT_STRING", "mysql://u:p@h1:1234/web"),
        ),
        (
            K::Mongodb,
            ("MONGODB_DB_CONNECT_STRING", "mongodb://u:p@h1:1234/web"),
        ),
    ] {
        let e = env_map(kind, Framework::Flask, &parts);
        assert_eq!(e[expected.0], expected.1, "{kind:?}");
        let prefix = expected.0.trim_end_matches("CONNECT_STRING");
        assert_eq!(e[&format!("{prefix}NAME")], "web", "{kind:?}");
        assert_eq!(e[&format!("{prefix}HOSTNAME")], "h1", "{kind:?}");
    }
}

#[test]
fn database_key_names_the_database() {
    let e = env_map(
        K::Mysql,
        Framework::Go,
        &[
            ("username", "u"),
            ("password", "p"),
            ("endpoints", "h:3306"),
            ("database", "shop"),
        ],
    );
    assert_eq!(e["MYSQL_DB_CONNECT_STRING"], "mysql://u:p@h:3306/shop");
    assert_eq!(e["MYSQL_DB_NAME"], "shop");
}

#[test]
fn database_query_is_split_out() {
    let e = env_map(
        K::Mongodb,
        Framework::FastApi,
        &[(
            "uri",
            "mongodb://u:p@m:27017/db?replicaSet=rs0&authSource=admin",
        )],
    );
    assert_eq!(e["MONGODB_DB_QUERY"], "replicaSet=rs0&authSource=admin");
    assert_eq!(e["MONGODB_DB_PATH"], "/db");
    assert_eq!(e["MONGODB_DB_NAME"], "db");
}

#[test]
fn multi_host_mongodb_uri_uses_the_first_hosts_port() {
    // Python's urlparse raises on `27017,m2:27017`; twelve takes the first host's port.
    let e = env_map(
        K::Mongodb,
        Framework::Flask,
        &[("uri", "mongodb://u:p@m1:27017,m2:27017/db")],
    );
    assert_eq!(e["MONGODB_DB_HOSTNAME"], "m1");
    assert_eq!(e["MONGODB_DB_PORT"], "27017");
    assert_eq!(e["MONGODB_DB_NETLOC"], "u:p@m1:27017,m2:27017");
}

#[test]
fn credentials_with_reserved_characters_are_encoded_in_the_url_and_decoded_in_the_fields() {
    let e = env_map(
        K::Postgresql,
        Framework::Flask,
        &[
            ("username", "u"),
            ("password", "p@ss/w:rd"),
            ("endpoints", "h:5432"),
        ],
    );
    assert_eq!(
        e["POSTGRESQL_DB_CONNECT_STRING"],
        "postgresql://u:p%40ss%2Fw%3Ard@h:5432/web"
    );
    assert_eq!(e["POSTGRESQL_DB_PASSWORD"], "p@ss/w:rd");
    assert_eq!(e["POSTGRESQL_DB_HOSTNAME"], "h");
}

#[test]
fn database_without_uri_or_credentials_is_unusable() {
    for kind in [K::Postgresql, K::Mysql, K::Mongodb] {
        let reason = unusable_reason(run(kind, Framework::Flask, &[("username", "u")]));
        assert_eq!(reason, "no uri, and no password, endpoints yet");
    }
}

#[test]
fn spring_boot_gets_datasource_properties() {
    for (kind, jdbc) in [
        (K::Postgresql, "jdbc:postgresql://db.internal:5432/webdb"),
        (K::Mysql, "jdbc:mysql://db.internal:5432/webdb"),
    ] {
        let uri = PG_URI.replace(
            "postgresql",
            if kind == K::Mysql {
                "mysql"
            } else {
                "postgresql"
            },
        );
        let e = env_map(kind, Framework::SpringBoot, &[("uri", &uri)]);
        assert_eq!(
            spring_part(&e),
            pairs(&[
                ("spring.datasource.url", jdbc),
                ("spring.jpa.hibernate.ddl-auto", "none"),
                ("spring.datasource.username", "app"),
                ("spring.datasource.password", "s3cret"),
            ]),
            "{kind:?}"
        );
        // The split fields are there too.
        assert!(e.keys().any(|k| k.ends_with("_DB_CONNECT_STRING")));
    }
}

#[test]
fn spring_boot_mongodb_gets_only_the_uri_property() {
    let uri = "mongodb://u:p@m1:27017,m2:27017/db?replicaSet=rs0";
    let e = env_map(K::Mongodb, Framework::SpringBoot, &[("uri", uri)]);
    // The whole URI, all hosts (paas-charm cuts it at the first comma).
    assert_eq!(spring_part(&e), pairs(&[("spring.data.mongodb.uri", uri)]));
}

#[test]
fn other_frameworks_get_no_spring_properties() {
    for fw in [
        Framework::Flask,
        Framework::Django,
        Framework::FastApi,
        Framework::Go,
        Framework::ExpressJs,
    ] {
        assert!(
            spring_part(&env_map(K::Postgresql, fw, &[("uri", PG_URI)])).is_empty(),
            "{fw:?}"
        );
    }
}

// ---------------------------------------------------------------- redis and valkey

#[test]
fn redis_uri_without_credentials_or_path_has_no_username_password_or_name() {
    assert_eq!(
        env(K::Redis, Framework::Flask, &[("uri", "redis://cache:6379")]),
        pairs(&[
            ("REDIS_DB_CONNECT_STRING", "redis://cache:6379"),
            ("REDIS_DB_SCHEME", "redis"),
            ("REDIS_DB_NETLOC", "cache:6379"),
            ("REDIS_DB_PATH", ""),
            ("REDIS_DB_PARAMS", ""),
            ("REDIS_DB_QUERY", ""),
            ("REDIS_DB_FRAGMENT", ""),
            ("REDIS_DB_HOSTNAME", "cache"),
            ("REDIS_DB_PORT", "6379"),
        ])
    );
}

#[test]
fn redis_uri_with_credentials_and_database_number() {
    let e = env_map(
        K::Redis,
        Framework::Flask,
        &[("uri", "redis://default:pw@cache:6379/2")],
    );
    assert_eq!(e["REDIS_DB_USERNAME"], "default");
    assert_eq!(e["REDIS_DB_PASSWORD"], "pw");
    assert_eq!(e["REDIS_DB_NAME"], "2");
}

#[test]
fn redis_port_none_is_not_ready() {
    let reason = unusable_reason(run(
        K::Redis,
        Framework::Flask,
        &[("uri", "redis://cache:None")],
    ));
    assert_eq!(reason, "redis://cache:None has no port yet");
}

#[test]
fn spring_boot_gets_redis_properties() {
    let e = env_map(
        K::Redis,
        Framework::SpringBoot,
        &[("uri", "redis://default:pw@cache:6379")],
    );
    assert_eq!(
        spring_part(&e),
        pairs(&[
            ("spring.data.redis.url", "redis://default:pw@cache:6379"),
            ("spring.data.redis.host", "cache"),
            ("spring.data.redis.port", "6379"),
            ("spring.data.redis.username", "default"),
            ("spring.data.redis.password", "pw"),
        ])
    );
}

#[test]
fn valkey_endpoint_gets_scheme_credentials_and_the_four_extra_variables() {
    let e = env(
        K::Valkey,
        Framework::Flask,
        &[
            ("endpoints", "valkey-0:6379"),
            ("username", "u"),
            ("password", "p"),
            ("mode", "cluster"),
            ("version", "8"),
        ],
    );
    assert_eq!(
        e,
        pairs(&[
            ("VALKEY_DB_CONNECT_STRING", "valkey://u:p@valkey-0:6379"),
            ("VALKEY_DB_SCHEME", "valkey"),
            ("VALKEY_DB_NETLOC", "u:p@valkey-0:6379"),
            ("VALKEY_DB_PATH", ""),
            ("VALKEY_DB_PARAMS", ""),
            ("VALKEY_DB_QUERY", ""),
            ("VALKEY_DB_FRAGMENT", ""),
            ("VALKEY_DB_USERNAME", "u"),
            ("VALKEY_DB_PASSWORD", "p"),
            ("VALKEY_DB_HOSTNAME", "valkey-0"),
            ("VALKEY_DB_PORT", "6379"),
            // Always present, "" when the provider gives none (as paas-charm).
            ("VALKEY_DB_READ_ONLY_ENDPOINTS", ""),
            ("VALKEY_DB_SENTINEL_ENDPOINTS", ""),
            ("VALKEY_MODE", "cluster"),
            ("VALKEY_VERSION", "8"),
        ])
    );
}

#[test]
fn valkey_uri_and_host_port_forms() {
    let by_uri = env_map(
        K::Valkey,
        Framework::Go,
        &[("uri", "valkey://v:6379"), ("password", "p")],
    );
    assert_eq!(by_uri["VALKEY_DB_CONNECT_STRING"], "valkey://:p@v:6379");
    let by_host = env_map(K::Valkey, Framework::Go, &[("host", "v"), ("port", "6380")]);
    assert_eq!(by_host["VALKEY_DB_CONNECT_STRING"], "valkey://v:6380");
    // Valkey has no Spring properties in paas-charm.
    assert!(spring_part(&env_map(
        K::Valkey,
        Framework::SpringBoot,
        &[("host", "v"), ("port", "6380")]
    ))
    .is_empty());
}

#[test]
fn valkey_tls_is_invalid() {
    let r = run(
        K::Valkey,
        Framework::Flask,
        &[("endpoints", "v:6379"), ("tls", "true")],
    );
    assert_eq!(
        r.clone().unwrap_err().to_string(),
        "Invalid valkey relation data."
    );
    assert_eq!(invalid_reason(r), "TLS mode is not supported for Valkey");
    assert!(run(
        K::Valkey,
        Framework::Flask,
        &[("endpoints", "v:6379"), ("tls", "false")]
    )
    .is_ok());
}

// ---------------------------------------------------------------- rabbitmq

#[test]
fn rabbitmq_parts_become_an_amqp_url_with_the_vhost_quoted() {
    assert_eq!(
        env(
            K::Rabbitmq,
            Framework::Django,
            &[("username", "web"), ("password", "pw"), ("hostname", "mq")]
        ),
        pairs(&[
            ("RABBITMQ_CONNECT_STRING", "amqp://web:pw@mq:5672/%2F"),
            ("RABBITMQ_SCHEME", "amqp"),
            ("RABBITMQ_NETLOC", "web:pw@mq:5672"),
            ("RABBITMQ_PATH", "/%2F"),
            ("RABBITMQ_PARAMS", ""),
            ("RABBITMQ_QUERY", ""),
            ("RABBITMQ_FRAGMENT", ""),
            ("RABBITMQ_USERNAME", "web"),
            ("RABBITMQ_PASSWORD", "pw"),
            ("RABBITMQ_HOSTNAME", "mq"),
            ("RABBITMQ_PORT", "5672"),
            ("RABBITMQ_VHOST", "/"),
            ("RABBITMQ_CONNECT_STRINGS", "amqp://web:pw@mq:5672/%2F"),
        ])
    );
}

#[test]
fn rabbitmq_named_vhost_and_uri_form() {
    let e = env_map(
        K::Rabbitmq,
        Framework::Flask,
        &[
            ("username", "u"),
            ("password", "p"),
            ("hostname", "mq"),
            ("vhost", "shop"),
        ],
    );
    assert_eq!(e["RABBITMQ_CONNECT_STRING"], "amqp://u:p@mq:5672/shop");
    assert_eq!(e["RABBITMQ_VHOST"], "shop");
    let e = env_map(
        K::Rabbitmq,
        Framework::Flask,
        &[("uri", "amqp://u:p@mq:5672/%2Fprod")],
    );
    assert_eq!(e["RABBITMQ_VHOST"], "/prod");
}

#[test]
fn rabbitmq_hostnames_give_one_connect_string_per_unit() {
    let e = env_map(
        K::Rabbitmq,
        Framework::Flask,
        &[
            ("username", "u"),
            ("password", "p"),
            ("hostname", "mq-0"),
            ("hostnames", "mq-0,mq-1"),
        ],
    );
    assert_eq!(
        e["RABBITMQ_CONNECT_STRINGS"],
        "amqp://u:p@mq-0:5672/%2F,amqp://u:p@mq-1:5672/%2F"
    );
}

/// paas-charm 1.11: `RABBITMQ_CONNECT_STRINGS` whenever RabbitMQ is related, the URI of every
/// broker unit, falling back to the one host when the provider names no units.
#[test]
fn rabbitmq_connect_strings_are_always_set_falling_back_to_the_one_host() {
    let cases: Vec<(Pairs, &str)> = vec![
        (
            vec![("username", "u"), ("password", "p"), ("hostname", "mq")],
            "amqp://u:p@mq:5672/%2F",
        ),
        (
            vec![
                ("username", "u"),
                ("password", "p"),
                ("hostname", "mq"),
                ("vhost", "shop"),
            ],
            "amqp://u:p@mq:5672/shop",
        ),
        (
            vec![("uri", "amqp://u:p@mq:5672/%2F")],
            "amqp://u:p@mq:5672/%2F",
        ),
        (
            vec![
                ("uri", "amqp://u:p@mq-0:5672/%2F"),
                ("hostnames", "mq-0, mq-1"),
            ],
            "amqp://u:p@mq-0:5672/%2F,amqp://u:p@mq-1:5672/%2F",
        ),
    ];
    for (d, expected) in cases {
        for fw in [Framework::Flask, Framework::SpringBoot] {
            let out = run(K::Rabbitmq, fw, &d).expect("valid data");
            assert_eq!(
                out.env.get("RABBITMQ_CONNECT_STRINGS").map(String::as_str),
                Some(expected),
                "{fw:?} {d:?}"
            );
            assert!(out.secrets.iter().any(|s| s == expected), "{d:?}");
        }
    }
}

#[test]
fn spring_boot_gets_rabbitmq_properties() {
    let e = env_map(
        K::Rabbitmq,
        Framework::SpringBoot,
        &[("username", "u"), ("password", "p"), ("hostname", "mq")],
    );
    assert_eq!(
        spring_part(&e),
        pairs(&[
            ("spring.rabbitmq.virtual-host", "/"),
            ("spring.rabbitmq.username", "u"),
            ("spring.rabbitmq.password", "p"),
            ("spring.rabbitmq.host", "mq"),
            ("spring.rabbitmq.port", "5672"),
        ])
    );
}

// ---------------------------------------------------------------- s3

const S3_MIN: [(&str, &str); 3] = [
    ("access-key", "AK"),
    ("secret-key", "SK"),
    ("bucket", "web"),
];

#[test]
fn s3_keys_become_s3_variables() {
    let mut all = S3_MIN.to_vec();
    all.extend([
        ("region", "eu-west-1"),
        ("storage-class", "STANDARD"),
        ("endpoint", "https://s3.example.com"),
        ("path", "uploads/"),
        ("api-version", "s3v4"),
        ("uri-style", "path"),
        ("attributes", r#"["x-amz-meta-a: 1"]"#),
        (
            "tls-ca-chain",
            r#"["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"]"#,
        ),
    ]);
    assert_eq!(
        env(K::S3, Framework::Flask, &all),
        pairs(&[
            ("S3_ACCESS_KEY", "AK"),
            ("S3_SECRET_KEY", "SK"),
            ("S3_REGION", "eu-west-1"),
            ("S3_STORAGE_CLASS", "STANDARD"),
            ("S3_BUCKET", "web"),
            ("S3_ENDPOINT", "https://s3.example.com"),
            ("S3_PATH", "uploads/"),
            ("S3_API_VERSION", "s3v4"),
            ("S3_URI_STYLE", "path"),
            ("S3_ADDRESSING_STYLE", "path"),
            // JSON as Python's json.dumps writes it.
            ("S3_ATTRIBUTES", r#"["x-amz-meta-a: 1"]"#),
            (
                "S3_TLS_CA_CHAIN",
                r#"["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"]"#
            ),
        ])
    );
    assert_eq!(env(K::S3, Framework::Flask, &S3_MIN).len(), 3);
}

#[test]
fn s3_host_uri_style_means_virtual_addressing() {
    for (style, addressing) in [("host", "virtual"), ("path", "path")] {
        let mut d = S3_MIN.to_vec();
        d.push(("s3-uri-style", style)); // the provider's own key name works too
        let e = env_map(K::S3, Framework::Flask, &d);
        assert_eq!(e["S3_URI_STYLE"], style);
        assert_eq!(e["S3_ADDRESSING_STYLE"], addressing);
    }
}

#[test]
fn s3_tls_ca_chain_is_kept_without_attributes() {
    // paas-charm emits S3_TLS_CA_CHAIN only when `attributes` is set: fixed.
    let mut d = S3_MIN.to_vec();
    d.push((
        "tls-ca-chain",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ));
    let e = env_map(K::S3, Framework::Flask, &d);
    assert_eq!(
        e["S3_TLS_CA_CHAIN"],
        r#"["-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"]"#
    );
    assert!(!e.contains_key("S3_ATTRIBUTES"));
}

#[test]
fn s3_without_credentials_or_bucket_is_invalid() {
    let r = run(K::S3, Framework::Flask, &[("access-key", "AK")]);
    assert_eq!(
        r.clone().unwrap_err().to_string(),
        "Invalid s3 relation data."
    );
    assert_eq!(invalid_reason(r), "missing secret-key, bucket");
}

#[test]
fn spring_boot_gets_spring_cloud_aws_properties() {
    let mut d = S3_MIN.to_vec();
    d.extend([("region", "eu-west-1"), ("endpoint", "http://minio:9000")]);
    assert_eq!(
        spring_part(&env_map(K::S3, Framework::SpringBoot, &d)),
        pairs(&[
            ("spring.cloud.aws.credentials.accessKey", "AK"),
            ("spring.cloud.aws.credentials.secretKey", "SK"),
            ("spring.cloud.aws.s3.bucket", "web"),
            ("spring.cloud.aws.region.static", "eu-west-1"),
            ("spring.cloud.aws.s3.endpoint", "http://minio:9000"),
        ])
    );
}

// ---------------------------------------------------------------- saml

const SAML: [(&str, &str); 4] = [
    ("entity-id", "https://idp.example.com/metadata"),
    ("metadata-url", "https://idp.example.com"),
    (
        "single-sign-on-redirect-url",
        "https://idp.example.com/sso/redirect",
    ),
    ("signing-certificate", "MIICert"),
];

#[test]
fn saml_data_becomes_saml_variables_with_urls_normalised() {
    assert_eq!(
        env(K::Saml, Framework::Django, &SAML),
        pairs(&[
            ("SAML_ENTITY_ID", "https://idp.example.com/metadata"),
            // pydantic's HttpUrl adds the `/` path.
            ("SAML_METADATA_URL", "https://idp.example.com/"),
            (
                "SAML_SINGLE_SIGN_ON_REDIRECT_URL",
                "https://idp.example.com/sso/redirect"
            ),
            ("SAML_SIGNING_CERTIFICATE", "MIICert"),
        ])
    );
}

#[test]
fn saml_without_a_signing_certificate_is_invalid() {
    assert_eq!(
        invalid_reason(run(K::Saml, Framework::Flask, &SAML[..3])),
        "missing signing-certificate"
    );
}

#[test]
fn spring_boot_gets_saml2_relying_party_properties() {
    let p = "spring.security.saml2.relyingparty.registration.testentity";
    assert_eq!(
        spring_part(&env_map(K::Saml, Framework::SpringBoot, &SAML)),
        pairs(&[
            (
                &format!("{p}.assertingparty.metadata-uri"),
                "https://idp.example.com/"
            ),
            (
                &format!("{p}.entity-id"),
                "https://idp.example.com/metadata"
            ),
            (
                &format!("{p}.assertingparty.singlesignin.url"),
                "https://idp.example.com/sso/redirect"
            ),
            (
                &format!("{p}.assertingparty.verification.credentials[0].certificate-location"),
                "file:/app/saml.cert"
            ),
        ])
    );
}

// ---------------------------------------------------------------- tracing

#[test]
fn tracing_sets_the_otlp_endpoint_and_the_app_as_service_name() {
    for fw in [Framework::Flask, Framework::SpringBoot] {
        assert_eq!(
            env(K::Tracing, fw, &[("endpoint", "http://tempo:4318")]),
            pairs(&[
                ("OTEL_SERVICE_NAME", "web"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318/")
            ]),
            "{fw:?}"
        );
    }
}

#[test]
fn tracing_with_several_endpoints_uses_the_first() {
    let e = env_map(
        K::Tracing,
        Framework::Go,
        &[("endpoint", "http://tempo-0:4318/, http://tempo-1:4318/")],
    );
    assert_eq!(e["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://tempo-0:4318/");
    // No endpoint in the list: not there yet, like no endpoint key.
    for d in [vec![], vec![("endpoint", " , ")]] {
        assert_eq!(
            unusable_reason(run(K::Tracing, Framework::Go, &d)),
            "no endpoint yet",
            "{d:?}"
        );
    }
}

// ---------------------------------------------------------------- smtp

const SMTP: [(&str, &str); 8] = [
    ("host", "smtp.example.com"),
    ("port", "587"),
    ("user", "mailer"),
    ("password", "pw"),
    ("auth-type", "plain"),
    ("transport-security", "starttls"),
    ("domain", "example.com"),
    ("skip-ssl-verify", "false"),
];

#[test]
fn smtp_data_becomes_smtp_variables() {
    assert_eq!(
        env(K::Smtp, Framework::Flask, &SMTP),
        pairs(&[
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_PORT", "587"),
            ("SMTP_USER", "mailer"),
            ("SMTP_PASSWORD", "pw"),
            ("SMTP_AUTH_TYPE", "plain"),
            ("SMTP_TRANSPORT_SECURITY", "starttls"),
            ("SMTP_DOMAIN", "example.com"),
            ("SMTP_SKIP_SSL_VERIFY", "False"),
        ])
    );
}

#[test]
fn smtp_drops_the_value_none() {
    let e = env_map(
        K::Smtp,
        Framework::Flask,
        &[
            ("host", "relay"),
            ("port", "25"),
            ("auth-type", "none"),
            ("transport-security", "none"),
        ],
    );
    assert_eq!(
        e.into_iter().collect::<Vec<_>>(),
        pairs(&[
            ("SMTP_HOST", "relay"),
            ("SMTP_PORT", "25"),
            ("SMTP_SKIP_SSL_VERIFY", "False")
        ])
    );
}

#[test]
fn smtp_keeps_values_paas_charm_dropped() {
    // paas-charm's `v not in ("none")` is a substring test: it drops "on", "no", "n", "e"...
    for value in ["on", "no", "n", "e", "o", "ne"] {
        let e = env_map(
            K::Smtp,
            Framework::Flask,
            &[
                ("host", "relay"),
                ("port", "25"),
                ("user", value),
                ("domain", value),
            ],
        );
        assert_eq!(e["SMTP_USER"], value);
        assert_eq!(e["SMTP_DOMAIN"], value);
    }
}

#[test]
fn spring_boot_gets_spring_mail_properties() {
    assert_eq!(
        spring_part(&env_map(K::Smtp, Framework::SpringBoot, &SMTP)),
        pairs(&[
            ("spring.mail.host", "smtp.example.com"),
            ("spring.mail.port", "587"),
            ("spring.mail.username", "mailer@example.com"),
            ("spring.mail.password", "pw"),
            ("spring.mail.properties.mail.smtp.auth", "true"),
            ("spring.mail.properties.mail.smtp.starttls.enable", "true"),
        ])
    );
}

#[test]
fn spring_mail_auth_is_a_boolean_and_the_username_needs_no_domain() {
    // paas-charm passes the auth type itself (`plain`), which JavaMail reads as false, and
    // writes `None@None` without a user: both fixed.
    let e = env_map(
        K::Smtp,
        Framework::SpringBoot,
        &[
            ("host", "relay"),
            ("port", "25"),
            ("transport-security", "tls"),
        ],
    );
    assert_eq!(e["spring.mail.properties.mail.smtp.auth"], "false");
    assert_eq!(
        e["spring.mail.properties.mail.smtp.starttls.enable"],
        "false"
    );
    assert!(!e.contains_key("spring.mail.username"));
    let e = env_map(
        K::Smtp,
        Framework::SpringBoot,
        &[("host", "relay"), ("port", "25"), ("user", "bob")],
    );
    assert_eq!(e["spring.mail.username"], "bob");
}

#[test]
fn smtp_bad_values_are_invalid() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("port", "25")], "missing host"),
        (
            &[("host", "h"), ("port", "smtp")],
            "port \"smtp\" is not a number",
        ),
        (
            &[("host", "h"), ("port", "25"), ("auth-type", "login")],
            "auth-type must be one of none, not_provided, plain, not \"login\"",
        ),
        (
            &[("host", "h"), ("port", "25"), ("skip-ssl-verify", "maybe")],
            "skip-ssl-verify must be true or false, not \"maybe\"",
        ),
    ];
    for (d, reason) in cases {
        assert_eq!(invalid_reason(run(K::Smtp, Framework::Flask, d)), reason);
    }
}

// ---------------------------------------------------------------- openfga

const FGA: [(&str, &str); 4] = [
    ("store-id", "01ABC"),
    ("token", "tok"),
    ("grpc-api-url", "http://fga:8081"),
    ("http-api-url", "http://fga:8080"),
];

#[test]
fn openfga_data_becomes_fga_variables() {
    assert_eq!(
        env(K::Openfga, Framework::Flask, &FGA),
        pairs(&[
            ("FGA_STORE_ID", "01ABC"),
            ("FGA_TOKEN", "tok"),
            ("FGA_GRPC_API_URL", "http://fga:8081"),
            ("FGA_HTTP_API_URL", "http://fga:8080"),
        ])
    );
    assert_eq!(
        unusable_reason(run(K::Openfga, Framework::Flask, &FGA[1..])),
        "no store-id yet"
    );
}

#[test]
fn spring_boot_gets_openfga_properties() {
    assert_eq!(
        spring_part(&env_map(K::Openfga, Framework::SpringBoot, &FGA)),
        pairs(&[
            ("openfga.store-id", "01ABC"),
            ("openfga.credentials.method", "API_TOKEN"),
            ("openfga.credentials.config.api-token", "tok"),
            ("openfga.api-url", "http://fga:8080"),
        ])
    );
}

// ---------------------------------------------------------------- kafka

#[test]
fn kafka_security_protocol_follows_credentials_and_ca() {
    let servers = ("bootstrap-servers", "k0:9092,k1:9092");
    let creds = [("username", "u"), ("password", "p")];
    let ca = ("tls-ca", "-----BEGIN CERTIFICATE-----");
    let cases: [(Pairs, &str, Option<&str>); 4] = [
        (vec![servers], "PLAINTEXT", None),
        (vec![servers, ca], "SSL", None),
        (
            vec![servers, creds[0], creds[1]],
            "SASL_PLAINTEXT",
            Some("SCRAM-SHA-512"),
        ),
        (
            vec![servers, creds[0], creds[1], ca],
            "SASL_SSL",
            Some("SCRAM-SHA-512"),
        ),
    ];
    for (d, protocol, mechanism) in cases {
        let e = env_map(K::Kafka, Framework::Flask, &d);
        assert_eq!(e["KAFKA_BOOTSTRAP_SERVERS"], "k0:9092,k1:9092");
        assert_eq!(e["KAFKA_SECURITY_PROTOCOL"], protocol, "{d:?}");
        assert_eq!(
            e.get("KAFKA_SASL_MECHANISM").map(String::as_str),
            mechanism,
            "{d:?}"
        );
    }
}

#[test]
fn kafka_data_becomes_kafka_variables() {
    let d = [
        ("bootstrap-servers", "k0:9092"),
        ("username", "u"),
        ("password", "p"),
        ("topic", "orders"),
        ("consumer-group-prefix", "web-"),
        ("tls-ca", "CA"),
    ];
    assert_eq!(
        env(K::Kafka, Framework::Go, &d),
        pairs(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "k0:9092"),
            ("KAFKA_USERNAME", "u"),
            ("KAFKA_PASSWORD", "p"),
            ("KAFKA_TOPIC", "orders"),
            ("KAFKA_CONSUMER_GROUP_PREFIX", "web-"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_TLS_CA", "CA"),
        ])
    );
}

#[test]
fn spring_boot_gets_spring_kafka_properties_with_a_scram_jaas_config() {
    let d = [
        ("bootstrap-servers", "k0:9092"),
        ("username", "u"),
        ("password", "p\"q"),
        ("consumer-group-prefix", "web-"),
    ];
    let out = run(K::Kafka, Framework::SpringBoot, &d).unwrap();
    let jaas = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p\"q";"#;
    assert_eq!(
        spring_part(&out.env),
        pairs(&[
            ("spring.kafka.bootstrap-servers", "k0:9092"),
            ("spring.kafka.security.protocol", "SASL_PLAINTEXT"),
            ("spring.kafka.properties.sasl.mechanism", "SCRAM-SHA-512"),
            ("spring.kafka.properties.sasl.jaas.config", jaas),
            ("spring.kafka.consumer.group-id", "web-"),
        ])
    );
    assert!(out.secrets.contains(&jaas.to_string()));
}

#[test]
fn kafka_credentials_come_in_pairs() {
    assert_eq!(
        invalid_reason(run(
            K::Kafka,
            Framework::Flask,
            &[("bootstrap-servers", "k:9092"), ("username", "u")]
        )),
        "username is given without a password"
    );
    assert_eq!(
        unusable_reason(run(K::Kafka, Framework::Flask, &[("topic", "t")])),
        "no bootstrap-servers yet"
    );
}

// ---------------------------------------------------------------- oauth

const OIDC: [(&str, &str); 7] = [
    ("client-id", "cid"),
    ("client-secret", "csecret"),
    ("issuer-url", "https://hydra.example.com"),
    (
        "authorization-endpoint",
        "https://hydra.example.com/oauth2/auth",
    ),
    ("token-endpoint", "https://hydra.example.com/oauth2/token"),
    ("userinfo-endpoint", "https://hydra.example.com/userinfo"),
    (
        "jwks-endpoint",
        "https://hydra.example.com/.well-known/jwks.json",
    ),
];

#[test]
fn oauth_variables_are_prefixed_by_framework_and_endpoint() {
    assert_eq!(
        env(K::Oauth, Framework::Flask, &OIDC),
        pairs(&[
            ("FLASK_OIDC_CLIENT_ID", "cid"),
            ("FLASK_OIDC_CLIENT_SECRET", "csecret"),
            ("FLASK_OIDC_API_BASE_URL", "https://hydra.example.com"),
            (
                "FLASK_OIDC_AUTHORIZE_URL",
                "https://hydra.example.com/oauth2/auth"
            ),
            (
                "FLASK_OIDC_ACCESS_TOKEN_URL",
                "https://hydra.example.com/oauth2/token"
            ),
            ("FLASK_OIDC_USER_URL", "https://hydra.example.com/userinfo"),
            (
                "FLASK_OIDC_CLIENT_KWARGS",
                r#"{"scope": "openid profile email"}"#
            ),
            (
                "FLASK_OIDC_JWKS_URL",
                "https://hydra.example.com/.well-known/jwks.json"
            ),
        ])
    );
    for (fw, key) in [
        (Framework::Django, "DJANGO_OIDC_CLIENT_ID"),
        (Framework::FastApi, "APP_OIDC_CLIENT_ID"),
        (Framework::Go, "APP_OIDC_CLIENT_ID"),
        (Framework::ExpressJs, "APP_OIDC_CLIENT_ID"),
        (Framework::SpringBoot, "APP_OIDC_CLIENT_ID"),
    ] {
        assert!(env_map(K::Oauth, fw, &OIDC).contains_key(key), "{fw:?}");
    }
}

#[test]
fn oauth_endpoint_dashes_are_kept_and_scopes_come_from_config() {
    let config: IndexMap<String, Value> =
        [("my-idp-scopes".to_string(), json!("openid email groups"))]
            .into_iter()
            .collect();
    let e = run_with(K::Oauth, Framework::Flask, "my-idp", &config, &OIDC)
        .unwrap()
        .env;
    assert_eq!(
        e["FLASK_MY-IDP_CLIENT_KWARGS"],
        r#"{"scope": "openid email groups"}"#
    );
}

#[test]
fn oauth_without_openid_scope_is_invalid_with_paas_charms_message() {
    let config: IndexMap<String, Value> = [("oidc-scopes".to_string(), json!("profile email"))]
        .into_iter()
        .collect();
    let reason = invalid_reason(run_with(K::Oauth, Framework::Flask, "oidc", &config, &OIDC));
    assert_eq!(
        reason,
        "The 'openid' scope is required for OAuth integration, please add it to the scopes."
    );
}

#[test]
fn oauth_missing_provider_fields_are_invalid() {
    assert_eq!(
        invalid_reason(run(K::Oauth, Framework::Flask, &OIDC[..5])),
        "missing userinfo-endpoint, jwks-endpoint"
    );
}

#[test]
fn spring_boot_gets_oauth2_client_registration_and_provider_properties() {
    let r = "spring.security.oauth2.client.registration.oidc";
    let p = "spring.security.oauth2.client.provider.oidc";
    assert_eq!(
        spring_part(&env_map(K::Oauth, Framework::SpringBoot, &OIDC)),
        pairs(&[
            (&format!("{r}.client-id"), "cid"),
            (&format!("{r}.client-secret"), "csecret"),
            // base URL without its trailing `/`, then the redirect path without its leading `/`.
            (
                &format!("{r}.redirect-uri"),
                "http://web.localhost:8080/login/oauth2/code/oidc"
            ),
            (&format!("{r}.scope"), "openid,profile,email"),
            (&format!("{r}.user-name-attribute"), "sub"),
            (
                &format!("{p}.authorization-uri"),
                "https://hydra.example.com/oauth2/auth"
            ),
            (&format!("{p}.issuer-uri"), "https://hydra.example.com"),
            (
                &format!("{p}.jwk-set-uri"),
                "https://hydra.example.com/.well-known/jwks.json"
            ),
            (
                &format!("{p}.token-uri"),
                "https://hydra.example.com/oauth2/token"
            ),
            (
                &format!("{p}.user-info-uri"),
                "https://hydra.example.com/userinfo"
            ),
            (&format!("{p}.user-name-attribute"), "sub"),
            (
                &format!("{r}.authorization-grant-type"),
                "authorization_code"
            ),
        ])
    );
}

#[test]
fn spring_boot_oauth_reads_redirect_path_and_user_name_attribute_from_config() {
    let config: IndexMap<String, Value> = [
        ("oidc-redirect-path".to_string(), json!("/auth/done")),
        ("oidc-user-name-attribute".to_string(), json!("email")),
    ]
    .into_iter()
    .collect();
    let e = run_with(K::Oauth, Framework::SpringBoot, "oidc", &config, &OIDC)
        .unwrap()
        .env;
    assert_eq!(
        e["spring.security.oauth2.client.registration.oidc.redirect-uri"],
        "http://web.localhost:8080/auth/done"
    );
    assert_eq!(
        e["spring.security.oauth2.client.provider.oidc.user-name-attribute"],
        "email"
    );
}

#[test]
fn oauth_options_paas_charm_adds_per_endpoint() {
    let cases = [
        (
            Framework::Flask,
            vec![
                ("oidc-redirect-path", "/callback"),
                ("oidc-scopes", "openid profile email"),
            ],
        ),
        (
            Framework::Go,
            vec![
                ("oidc-redirect-path", "/callback"),
                ("oidc-scopes", "openid profile email"),
            ],
        ),
        (
            Framework::SpringBoot,
            vec![
                ("oidc-redirect-path", "/login/oauth2/code/oidc"),
                ("oidc-scopes", "openid profile email"),
                ("oidc-user-name-attribute", "sub"),
            ],
        ),
    ];
    for (fw, expected) in cases {
        let got: Vec<(String, Value)> = oauth_options(fw, "oidc")
            .into_iter()
            .map(|(name, opt)| {
                assert_eq!(opt.type_, OptionType::String);
                assert!(opt.description.is_some() && opt.optional.is_none());
                (name, opt.default.unwrap())
            })
            .collect();
        let expected: Vec<(String, Value)> = expected
            .into_iter()
            .map(|(n, d)| (n.to_string(), json!(d)))
            .collect();
        assert_eq!(got, expected, "{fw:?}");
    }
}

// ---------------------------------------------------------------- http proxy

#[test]
fn http_proxy_sets_both_cases_only_for_what_is_given() {
    assert_eq!(
        env(
            K::HttpProxy,
            Framework::Flask,
            &[("http-proxy", "http://squid:3128")]
        ),
        pairs(&[
            ("HTTP_PROXY", "http://squid:3128"),
            ("http_proxy", "http://squid:3128")
        ])
    );
    let e = env_map(
        K::HttpProxy,
        Framework::Go,
        &[("http-proxy", "http://p:1"), ("https-proxy", "http://p:2")],
    );
    assert_eq!(e["HTTPS_PROXY"], "http://p:2");
    assert_eq!(e["https_proxy"], "http://p:2");
    assert_eq!(
        unusable_reason(run(K::HttpProxy, Framework::Go, &[])),
        "no http-proxy or https-proxy yet"
    );
}

// ---------------------------------------------------------------- secrets and errors

#[test]
fn every_password_key_and_token_is_secret() {
    let cases: Vec<(K, Framework, Pairs, Vec<&str>)> = vec![
        (
            K::Postgresql,
            Framework::Flask,
            vec![("uri", PG_URI)],
            vec!["s3cret", PG_URI, "app:s3cret@db.internal:5432"],
        ),
        (
            K::Postgresql,
            Framework::Flask,
            vec![("uri", "postgresql://h:5432/db")],
            vec![],
        ),
        (
            K::S3,
            Framework::SpringBoot,
            S3_MIN.to_vec(),
            vec!["AK", "SK"],
        ),
        (K::Smtp, Framework::Flask, SMTP.to_vec(), vec!["pw"]),
        (K::Openfga, Framework::Flask, FGA.to_vec(), vec!["tok"]),
        (K::Oauth, Framework::Flask, OIDC.to_vec(), vec!["csecret"]),
        (
            K::Rabbitmq,
            Framework::Flask,
            vec![("uri", "amqp://u:p@mq:5672/%2F")],
            vec!["p", "amqp://u:p@mq:5672/%2F", "u:p@mq:5672"],
        ),
        (
            K::Redis,
            Framework::Flask,
            vec![("uri", "redis://cache:6379")],
            vec![],
        ),
        (
            K::HttpProxy,
            Framework::Flask,
            vec![("http-proxy", "http://u:pw@p:1")],
            vec!["http://u:pw@p:1"],
        ),
    ];
    for (kind, fw, d, expected) in cases {
        let out = run(kind, fw, &d).unwrap();
        assert_eq!(out.secrets, expected, "{kind:?}");
    }
}

#[test]
fn relation_data_errors_show_paas_charms_two_messages() {
    let invalid = run(K::S3, Framework::Flask, &[]).unwrap_err();
    assert_eq!(invalid.to_string(), "Invalid s3 relation data.");
    let unusable = run(K::Postgresql, Framework::Flask, &[]).unwrap_err();
    assert_eq!(
        unusable.to_string(),
        "postgresql relation data is either unavailable, invalid or not usable."
    );
    // The endpoint in the message is the project's name for it.
    let named = run_with(K::Oauth, Framework::Flask, "sso", &IndexMap::new(), &[]).unwrap_err();
    assert_eq!(named.to_string(), "Invalid sso relation data.");
}

// ---------------------------------------------------------------- validate_data

#[test]
fn validate_data_accepts_complete_data() {
    let ok: Vec<(K, Vec<(&str, &str)>)> = vec![
        (K::Postgresql, vec![("uri", PG_URI)]),
        (
            K::Mysql,
            vec![
                ("username", "u"),
                ("password", "p"),
                ("endpoints", "h:3306"),
                ("database", "d"),
            ],
        ),
        (K::Redis, vec![("uri", "redis://cache:6379/0")]),
        (
            K::Valkey,
            vec![("host", "v"), ("port", "6379"), ("tls", "false")],
        ),
        (
            K::Rabbitmq,
            vec![
                ("username", "u"),
                ("password", "p"),
                ("hostname", "mq"),
                ("vhost", "/"),
            ],
        ),
        (
            K::S3,
            [
                S3_MIN.as_slice(),
                &[("uri-style", "host"), ("tls-ca-chain", "PEM")],
            ]
            .concat(),
        ),
        (K::Saml, SAML.to_vec()),
        (K::Tracing, vec![("endpoint", "http://tempo:4318")]),
        (K::Smtp, SMTP.to_vec()),
        (K::Openfga, FGA.to_vec()),
        (
            K::Kafka,
            vec![
                ("bootstrap-servers", "k0:9092,k1:9092"),
                ("username", "u"),
                ("password", "p"),
            ],
        ),
        (K::Oauth, OIDC.to_vec()),
        (K::HttpProxy, vec![("https-proxy", "http://squid:3128")]),
    ];
    for (kind, d) in ok {
        assert_eq!(validate_data(kind, &data(&d)), Ok(()), "{kind:?}");
    }
}

#[test]
fn validate_data_names_what_is_missing_or_wrong() {
    let cases: Vec<(K, Pairs, &str)> = vec![
        (
            K::S3,
            vec![("access-key", "AK"), ("secret-key", "SK")],
            "s3 needs bucket: give --data bucket=... (accepted keys: access-key, secret-key, bucket, region, storage-class, endpoint, path, api-version, s3-api-version, uri-style, s3-uri-style, addressing-style, attributes, tls-ca-chain)",
        ),
        (
            K::Redis,
            vec![("url", "redis://h:6379")],
            "redis does not take the key \"url\"; accepted keys: uri",
        ),
        (
            K::Postgresql,
            vec![],
            "postgresql needs a uri, or username, password, endpoints: give --data uri=... or --data username=... --data password=... --data endpoints=... (accepted keys: uri, username, password, endpoints, database)",
        ),
        (
            K::Mysql,
            vec![("username", "u"), ("endpoints", "h:3306")],
            "mysql needs password (or a whole uri): give --data password=... (accepted keys: uri, username, password, endpoints, database)",
        ),
        (K::Postgresql, vec![("uri", "db.internal:5432")], "postgresql uri: \"db.internal:5432\" is not a URL of the form scheme://host[:port][/path]"),
        (K::Redis, vec![("uri", "redis://cache:None")], "redis uri: \"redis://cache:None\": port \"None\" is not a number from 0 to 65535"),
        (K::Smtp, vec![("host", "h"), ("port", "twenty-five")], "smtp port: \"twenty-five\" is not a port number (0 to 65535)"),
        (
            K::Kafka,
            vec![("bootstrap-servers", "k0")],
            "kafka bootstrap-servers: \"k0\" is not host:port; give host:port[,host:port...]",
        ),
        (K::Kafka, vec![("bootstrap-servers", "k0:9092"), ("password", "p")], "kafka has password but no username: give both, or neither"),
        (
            K::Valkey,
            vec![("mode", "cluster")],
            "valkey needs one of uri, endpoints, host: give e.g. --data uri=... (accepted keys: uri, endpoints, host, port, username, password, read-only-endpoints, sentinel-endpoints, mode, version, tls)",
        ),
        (K::Valkey, vec![("host", "v"), ("tls", "sometimes")], "valkey tls: \"sometimes\" is not true or false"),
        (
            K::Smtp,
            vec![("host", "h"), ("port", "25"), ("transport-security", "ssl")],
            "smtp transport-security: \"ssl\" is not one of none, starttls, tls",
        ),
        (K::Tracing, vec![("endpoint", "http://t:4318,tempo")], "tracing endpoint: \"tempo\" is not a URL of the form scheme://host[:port][/path]"),
        (K::S3, [S3_MIN.as_slice(), &[("attributes", "[1]")]].concat(), "s3 attributes: 1 is not a string"),
        (
            K::HttpProxy,
            vec![("no-proxy", "localhost")],
            "http-proxy does not take the key \"no-proxy\"; accepted keys: http-proxy, https-proxy",
        ),
    ];
    for (kind, d, message) in cases {
        assert_eq!(
            validate_data(kind, &data(&d)),
            Err(message.to_string()),
            "{kind:?} {d:?}"
        );
    }
}

#[test]
fn logging_forwards_every_service_to_each_loki_url_and_adds_no_env() {
    assert_eq!(
        IntegrationKind::detect("logging", "loki_push_api"),
        Some(K::Logging)
    );
    assert!(!K::Logging.checked_when_required());
    let urls = "http://loki-0:3100/loki/api/v1/push, http://loki-1:3100/loki/api/v1/push";
    let d = data(&[("url", urls)]);
    assert!(validate_data(K::Logging, &d).is_ok());
    for fw in [Framework::Flask, Framework::Go] {
        let got = run(K::Logging, fw, &[("url", urls)]).unwrap();
        assert!(got.env.is_empty(), "{got:?}");
    }
    let targets = log_targets(&d, "web", "web/1");
    assert_eq!(targets.keys().collect::<Vec<_>>(), ["loki-0", "loki-1"]);
    let t = &targets["loki-1"];
    assert_eq!(t.type_.as_deref(), Some("loki"));
    assert_eq!(
        t.location.as_deref(),
        Some("http://loki-1:3100/loki/api/v1/push")
    );
    assert_eq!(t.services, ["all"]);
    assert_eq!(t.labels["app"], "web");
    assert_eq!(t.labels["unit"], "web/1");

    let err = validate_data(K::Logging, &data(&[])).unwrap_err();
    assert!(err.contains("url"), "{err}");
    let err = validate_data(K::Logging, &data(&[("url", "loki:3100")])).unwrap_err();
    assert!(err.contains("url"), "{err}");
    let err = validate_data(K::Logging, &data(&[("uri", "http://x/")])).unwrap_err();
    assert!(err.contains("accepted keys: url"), "{err}");
    assert!(unusable_reason(run(K::Logging, Framework::Flask, &[])).contains("Loki"));
}
