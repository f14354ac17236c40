//! The 12-factor charm rules, as tables of inputs and expected outputs. Each test is named
//! for the behaviour it pins; reference/paas-charm.md is the source of the expectations.

#![allow(clippy::type_complexity)] // tables of cases read best written out inline

mod common;

use common::*;
use serde_json::json;
use twelve_charm::{ActionRun, SecretView, ServicesAction, State};
use twelve_layer::Startup;
use twelve_project::Framework;
use twelve_project::PaasCharmLine;
use twelve_project::ALL_FRAMEWORKS;

const TOKEN_OPTION: &str = "config:\n  options:\n    token:\n      type: string\n";

#[test]
fn user_options_get_the_framework_prefix() {
    for (fw, var) in [
        (Framework::Flask, "FLASK_TOKEN"),
        (Framework::Django, "DJANGO_TOKEN"),
        (Framework::FastApi, "APP_TOKEN"),
        (Framework::Go, "APP_TOKEN"),
        (Framework::ExpressJs, "APP_TOKEN"),
        (Framework::SpringBoot, "APP_TOKEN"),
    ] {
        let f = project(fw, TOKEN_OPTION, "", &[]);
        let mut s = state();
        set(&mut s, "token", json!("abc"));
        let p = plan(&f, &s);
        assert_eq!(
            p.environment.get(var).map(String::as_str),
            Some("abc"),
            "{fw}"
        );
        assert_eq!(
            env(&p, fw.service_name()).get(var).map(String::as_str),
            Some("abc"),
            "{fw}"
        );
    }
}

#[test]
fn option_names_map_dashes_to_underscores_and_values_are_json_encoded() {
    let f = project(
        Framework::FastApi,
        "config:\n  options:\n    config-option-name: {type: string}\n    is-on: {type: boolean}\n    count: {type: int}\n    ratio: {type: float}\n    unset: {type: string}\n    with-default: {type: int, default: 7}\n",
        "",
        &[],
    );
    let mut s = state();
    set(&mut s, "config-option-name", json!("x y"));
    set(&mut s, "is-on", json!(true));
    set(&mut s, "count", json!(42));
    set(&mut s, "ratio", json!(2.0));
    let p = plan(&f, &s);
    let e = &p.environment;
    assert_eq!(e["APP_CONFIG_OPTION_NAME"], "x y");
    assert_eq!(e["APP_IS_ON"], "true");
    assert_eq!(e["APP_COUNT"], "42");
    assert_eq!(e["APP_RATIO"], "2.0");
    assert_eq!(e["APP_WITH_DEFAULT"], "7");
    assert!(
        !e.contains_key("APP_UNSET"),
        "options with no value are absent"
    );
}

#[test]
fn user_option_named_app_something_is_exported_unlike_paas_charm() {
    let f = flask("config:\n  options:\n    app-mode: {type: string}\n");
    let mut s = state();
    set(&mut s, "app-mode", json!("fast"));
    assert_eq!(plan(&f, &s).environment["FLASK_APP_MODE"], "fast");
}

#[test]
fn a_user_option_cannot_override_a_built_in() {
    let f = flask("config:\n  options:\n    base-url: {type: string}\n");
    let mut s = state();
    set(&mut s, "base-url", json!("http://evil"));
    assert_eq!(
        plan(&f, &s).environment["FLASK_BASE_URL"],
        "http://web.default:8000"
    );
}

#[test]
fn base_url_defaults_to_app_model_and_port_and_follows_the_ingress() {
    for fw in ALL_FRAMEWORKS {
        let f = project(fw, "", "", &[]);
        let p = plan(&f, &state());
        let var = format!("{}BASE_URL", fw.prefix());
        assert_eq!(
            p.environment[&var],
            format!("http://web.default:{}", fw.default_port()),
            "{fw}"
        );
        let mut s = state();
        s.base_url = Some("http://web.localhost:8080".into());
        assert_eq!(
            plan(&f, &s).environment[&var],
            "http://web.localhost:8080",
            "{fw}"
        );
    }
}

#[test]
fn secret_key_is_the_generated_one_unless_configured() {
    let f = flask("");
    assert_eq!(
        plan(&f, &state()).environment["FLASK_SECRET_KEY"],
        "generated-key"
    );
    let mut s = state();
    set(&mut s, "flask-secret-key", json!("mine"));
    assert_eq!(plan(&f, &s).environment["FLASK_SECRET_KEY"], "mine");
    let g = project(Framework::Go, "", "", &[]);
    let mut s = state();
    set(&mut s, "app-secret-key", json!("go-key"));
    assert_eq!(plan(&g, &s).environment["APP_SECRET_KEY"], "go-key");
}

#[test]
fn no_generated_secret_key_yet_means_waiting_for_peer_integration() {
    let f = flask("");
    let mut s = state();
    s.secret_key = None;
    let p = plan(&f, &s);
    assert_eq!(p.status.state, State::Waiting);
    assert_eq!(p.status.message, "Waiting for peer integration");
}

#[test]
fn secret_key_id_takes_a_secret_with_one_value() {
    let f = flask("");
    let secret = |content: &[(&str, &str)]| SecretView {
        name: Some("key".into()),
        content: Some(
            content
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    };
    let cases: Vec<(Vec<(&str, &str)>, bool, Result<&str, &str>)> = vec![
        (vec![("value", "from-secret")], false, Ok("from-secret")),
        (
            vec![("value", "a"), ("other", "b")],
            false,
            Err("flask-secret-key-id secret contains multiple values"),
        ),
        (
            vec![("other", "b")],
            false,
            Err("flask-secret-key-id missing 'value' key in the secret content"),
        ),
        (
            vec![("value", "a")],
            true,
            Err("invalid options: flask-secret-key, flask-secret-key-id"),
        ),
    ];
    for (content, also_direct, want) in cases {
        let mut s = state();
        s.secrets.insert("s1".into(), secret(&content));
        set(&mut s, "flask-secret-key-id", json!("secret:s1"));
        if also_direct {
            set(&mut s, "flask-secret-key", json!("direct"));
        }
        let p = plan(&f, &s);
        match want {
            Ok(v) => assert_eq!(p.environment["FLASK_SECRET_KEY"], v),
            Err(m) => {
                assert_eq!(p.status.state, State::Blocked);
                assert_eq!(p.status.message, m);
            }
        }
    }
}

/// paas-charm main (unreleased, breaking): Flask and Django take the secret key from
/// `app-secret-key`/`app-secret-key-id`, and the workload variable keeps the framework
/// prefix. twelve keeps the 1.x `flask-secret-key`/`django-secret-key` too; setting more
/// than one is `invalid options`.
#[test]
fn app_secret_key_options_for_every_framework_keep_the_variable_prefix() {
    let secret = SecretView {
        name: Some("key".into()),
        content: Some([("value".to_string(), "from-secret".to_string())].into()),
    };
    let cases: Vec<(Framework, Vec<(&str, &str)>, Result<(&str, &str), &str>)> = vec![
        (
            Framework::Flask,
            vec![("app-secret-key", "new")],
            Ok(("FLASK_SECRET_KEY", "new")),
        ),
        (
            Framework::Django,
            vec![("app-secret-key", "new")],
            Ok(("DJANGO_SECRET_KEY", "new")),
        ),
        (
            Framework::Flask,
            vec![("app-secret-key-id", "secret:s1")],
            Ok(("FLASK_SECRET_KEY", "from-secret")),
        ),
        (
            Framework::Django,
            vec![("app-secret-key-id", "secret:s1")],
            Ok(("DJANGO_SECRET_KEY", "from-secret")),
        ),
        (
            Framework::Flask,
            vec![("flask-secret-key", "old")],
            Ok(("FLASK_SECRET_KEY", "old")),
        ),
        (
            Framework::Django,
            vec![("django-secret-key", "old")],
            Ok(("DJANGO_SECRET_KEY", "old")),
        ),
        (
            Framework::FastApi,
            vec![("app-secret-key", "k")],
            Ok(("APP_SECRET_KEY", "k")),
        ),
        (
            Framework::Flask,
            vec![("app-secret-key", "a"), ("app-secret-key-id", "secret:s1")],
            Err("invalid options: app-secret-key, app-secret-key-id"),
        ),
        (
            Framework::Django,
            vec![("app-secret-key", "a"), ("app-secret-key-id", "secret:s1")],
            Err("invalid options: app-secret-key, app-secret-key-id"),
        ),
        (
            Framework::Go,
            vec![("app-secret-key", "a"), ("app-secret-key-id", "secret:s1")],
            Err("invalid options: app-secret-key, app-secret-key-id"),
        ),
        (
            Framework::Flask,
            vec![("flask-secret-key", "a"), ("app-secret-key", "b")],
            Err("invalid options: app-secret-key, flask-secret-key"),
        ),
    ];
    for (fw, set_options, want) in cases {
        let f = project(fw, "", "", &[]);
        // The options exist, so `twelve config` accepts them.
        let options = twelve_charm::config::effective_options(&f.project);
        let mut s = state();
        s.secrets.insert("s1".into(), secret.clone());
        for (name, value) in &set_options {
            assert!(options.contains_key(*name), "{fw}: no option {name}");
            set(&mut s, name, json!(value));
        }
        let p = plan(&f, &s);
        match want {
            Ok((var, value)) => {
                // (Django without a database is blocked for that, not for its options.)
                assert!(
                    p.status.state == State::Active
                        || p.status.message == "Django requires a database integration to work",
                    "{fw} {set_options:?}: {}",
                    p.status.message
                );
                assert_eq!(p.environment[var], value, "{fw} {set_options:?}");
                assert!(
                    !p.environment.keys().any(|k| k.contains("SECRET_KEY_ID")
                        || k.ends_with("APP_SECRET_KEY") && var != "APP_SECRET_KEY"),
                    "{fw}: option leaked as a user variable: {:?}",
                    p.environment.keys().collect::<Vec<_>>()
                );
                assert!(p.secret_values.contains(value), "{fw}");
            }
            Err(m) => {
                assert_eq!(p.status.state, State::Blocked, "{fw} {set_options:?}");
                assert_eq!(p.status.message, m, "{fw}");
            }
        }
    }
}

#[test]
fn peer_fqdns_list_the_other_units_sorted() {
    let f = flask("");
    let mut s = state();
    s.units = vec![2, 0, 1];
    s.unit = 1;
    let p = plan(&f, &s);
    assert_eq!(
        p.environment["FLASK_PEER_FQDNS"],
        "web-0.web-endpoints.default.svc.cluster.local,web-2.web-endpoints.default.svc.cluster.local"
    );
    assert!(
        !plan(&f, &state())
            .environment
            .contains_key("FLASK_PEER_FQDNS"),
        "absent on a single unit"
    );
    s.network.peer_addresses = [
        (0, "127.0.0.1:9000".to_string()),
        (2, "127.0.0.1:9002".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        plan(&f, &s).environment["FLASK_PEER_FQDNS"],
        "127.0.0.1:9000,127.0.0.1:9002"
    );
}

#[test]
fn proxy_settings_are_given_in_both_cases() {
    let f = flask("");
    let mut s = state();
    s.proxy.http_proxy = Some("http://proxy:3128".into());
    s.proxy.no_proxy = Some("localhost".into());
    let e = plan(&f, &s).environment;
    assert_eq!(e["http_proxy"], "http://proxy:3128");
    assert_eq!(e["HTTP_PROXY"], "http://proxy:3128");
    assert_eq!(e["no_proxy"], "localhost");
    assert_eq!(e["NO_PROXY"], "localhost");
    assert!(!e.contains_key("HTTPS_PROXY"));
}

#[test]
fn flask_options_become_flask_variables() {
    let f = flask("");
    let mut s = state();
    set(&mut s, "flask-env", json!("staging"));
    set(&mut s, "flask-debug", json!(true));
    set(&mut s, "flask-permanent-session-lifetime", json!(3600));
    set(&mut s, "flask-application-root", json!("/app"));
    set(&mut s, "flask-session-cookie-secure", json!(false));
    set(&mut s, "flask-preferred-url-scheme", json!("http"));
    let e = plan(&f, &s).environment;
    assert_eq!(e["FLASK_ENV"], "staging");
    assert_eq!(e["FLASK_DEBUG"], "true");
    assert_eq!(e["FLASK_PERMANENT_SESSION_LIFETIME"], "3600");
    assert_eq!(e["FLASK_APPLICATION_ROOT"], "/app");
    assert_eq!(e["FLASK_SESSION_COOKIE_SECURE"], "false");
    assert_eq!(e["FLASK_PREFERRED_URL_SCHEME"], "HTTP", "upper-cased");
    assert_eq!(
        plan(&f, &state()).environment["FLASK_PREFERRED_URL_SCHEME"],
        "HTTPS",
        "extension default"
    );
}

#[test]
fn django_allowed_hosts_is_a_json_list_with_the_base_url_host() {
    let f = project(Framework::Django, "", "", &[]);
    let mut s = state();
    s.integrations
        .insert("postgresql".into(), Default::default());
    let e = plan(&f, &s).environment;
    assert_eq!(e["DJANGO_ALLOWED_HOSTS"], r#"["web.default"]"#);
    assert_eq!(e["DJANGO_DEBUG"], "false");
    set(
        &mut s,
        "django-allowed-hosts",
        json!("test.local, web.default"),
    );
    assert_eq!(
        plan(&f, &s).environment["DJANGO_ALLOWED_HOSTS"],
        r#"["test.local", "web.default"]"#,
        "not duplicated"
    );
    s.base_url = Some("http://Web.LocalHost:8080/".into());
    assert_eq!(
        plan(&f, &s).environment["DJANGO_ALLOWED_HOSTS"],
        r#"["test.local", "web.default", "web.localhost"]"#
    );
}

#[test]
fn fastapi_uvicorn_variables() {
    let f = project(Framework::FastApi, "", "", &[]);
    let mut s = state();
    set(&mut s, "webserver-workers", json!(4));
    set(&mut s, "webserver-log-level", json!("debug"));
    let e = plan(&f, &s).environment;
    assert_eq!(e["UVICORN_PORT"], "8080");
    assert_eq!(e["UVICORN_HOST"], "0.0.0.0");
    assert_eq!(e["WEB_CONCURRENCY"], "4");
    assert_eq!(e["UVICORN_LOG_LEVEL"], "debug");
    assert_eq!(e["METRICS_PORT"], "8080");
    assert_eq!(e["METRICS_PATH"], "/metrics");
    set(&mut s, "webserver-log-level", json!("loud"));
    let p = plan(&f, &s);
    assert_eq!(
        (p.status.state, p.status.message.as_str()),
        (State::Blocked, "invalid options: webserver-log-level")
    );
}

#[test]
fn go_uses_app_port_and_app_metrics_variables() {
    let f = project(Framework::Go, "", "", &[]);
    let mut s = state();
    set(&mut s, "app-port", json!(9000));
    let e = plan(&f, &s).environment;
    assert_eq!(e["APP_PORT"], "9000");
    assert_eq!(e["APP_METRICS_PORT"], "8080");
    assert_eq!(e["APP_METRICS_PATH"], "/metrics");
    assert!(!e.contains_key("PORT"));
}

#[test]
fn expressjs_gets_port_and_node_env() {
    let f = project(Framework::ExpressJs, "", "", &[]);
    let mut s = state();
    set(&mut s, "app-port", json!(3000));
    let e = plan(&f, &s).environment;
    assert_eq!(e["PORT"], "3000", "app-port wired (paas-charm 1.12.1 fix)");
    assert_eq!(e["NODE_ENV"], "production");
    assert_eq!(e["METRICS_PORT"], "8080");
}

#[test]
fn spring_boot_gets_server_and_management_properties() {
    let f = project(Framework::SpringBoot, "", "", &[]);
    let mut s = state();
    set(&mut s, "app-profiles", json!("prod"));
    let e = plan(&f, &s).environment;
    assert_eq!(e["SERVER_PORT"], "8080");
    assert_eq!(e["APP_PROFILES"], "prod");
    assert_eq!(e["spring.profiles.active"], "prod");
    assert_eq!(e["MANAGEMENT_SERVER_PORT"], "8080");
    assert_eq!(e["METRICS_PATH"], "/actuator/prometheus");
    assert_eq!(e["server.forward-headers-strategy"], "framework");
    assert_eq!(e["management.endpoints.web.exposure.include"], "prometheus");
    assert_eq!(e["management.endpoints.web.base-path"], "/actuator");
    assert_eq!(
        e["management.endpoints.web.path-mapping.prometheus"],
        "prometheus"
    );
    assert_eq!(e["OTEL_TRACES_EXPORTER"], "none");
    assert_eq!(e["APP_SECRET_KEY"], "generated-key");
    assert!(
        !e.contains_key("APP_METRICS_PORT"),
        "metrics-port is the framework's, not leaked as a user option"
    );
}

/// paas-charm main (unreleased): ports come from `paas-config.yaml` (`port`, `metrics-port`,
/// `metrics-path`) and the resolved framework defaults always reach the workload. A
/// project runs under main when its paas-config.yaml sets one of those keys (paas-charm
/// 1.12 refuses them); `None` here stands for a project switched by `--paas-charm main`.
#[test]
fn ports_and_metrics_variables_follow_paas_charm_main() {
    type Case<'a> = (
        Framework,
        Option<&'a str>,
        (u16, u16, &'a str),
        Vec<(&'a str, &'a str)>,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            Framework::Flask,
            None,
            (8000, 9102, "/metrics"),
            vec![
                ("FLASK_METRICS_PORT", "9102"),
                ("FLASK_METRICS_PATH", "/metrics"),
                ("FLASK_BASE_URL", "http://web.default:8000"),
            ],
            vec![],
        ),
        (
            Framework::Django,
            None,
            (8000, 9102, "/metrics"),
            vec![
                ("DJANGO_METRICS_PORT", "9102"),
                ("DJANGO_METRICS_PATH", "/metrics"),
            ],
            vec![],
        ),
        (
            Framework::Flask,
            Some("metrics-port: 9200\nmetrics-path: /stats\n"),
            (8000, 9200, "/stats"),
            vec![
                ("FLASK_METRICS_PORT", "9200"),
                ("FLASK_METRICS_PATH", "/stats"),
            ],
            vec![],
        ),
        (
            Framework::FastApi,
            None,
            (8000, 8000, "/metrics"),
            vec![
                ("UVICORN_PORT", "8000"),
                ("METRICS_PORT", "8000"),
                ("METRICS_PATH", "/metrics"),
                ("APP_BASE_URL", "http://web.default:8000"),
            ],
            vec![],
        ),
        (
            Framework::FastApi,
            Some("port: 9000\n"),
            (9000, 8000, "/metrics"),
            vec![
                ("UVICORN_PORT", "9000"),
                ("METRICS_PORT", "8000"),
                ("APP_BASE_URL", "http://web.default:9000"),
            ],
            vec![],
        ),
        (
            Framework::FastApi,
            Some("metrics-port: 9464\n"),
            (8000, 9464, "/metrics"),
            vec![("UVICORN_PORT", "8000"), ("METRICS_PORT", "9464")],
            vec![],
        ),
        (
            Framework::Go,
            None,
            (8080, 8080, "/metrics"),
            vec![
                ("PORT", "8080"),
                ("METRICS_PORT", "8080"),
                ("METRICS_PATH", "/metrics"),
            ],
            vec!["APP_PORT", "APP_METRICS_PORT", "APP_METRICS_PATH"],
        ),
        (
            Framework::Go,
            Some("port: 9000\n"),
            (9000, 8080, "/metrics"),
            vec![
                ("PORT", "9000"),
                ("METRICS_PORT", "8080"),
                ("APP_BASE_URL", "http://web.default:9000"),
            ],
            vec!["APP_PORT"],
        ),
        (
            Framework::ExpressJs,
            None,
            (8080, 9464, "/metrics"),
            vec![
                ("PORT", "8080"),
                ("METRICS_PORT", "9464"),
                ("METRICS_PATH", "/metrics"),
                ("NODE_ENV", "production"),
            ],
            vec![],
        ),
        (
            Framework::SpringBoot,
            None,
            (8080, 8080, "/actuator/prometheus"),
            vec![
                ("SERVER_PORT", "8080"),
                ("management.server.port", "8080"),
                ("management.endpoints.web.base-path", "/actuator"),
                (
                    "management.endpoints.web.path-mapping.prometheus",
                    "prometheus",
                ),
            ],
            vec!["METRICS_PORT", "METRICS_PATH", "MANAGEMENT_SERVER_PORT"],
        ),
        (
            Framework::SpringBoot,
            Some("metrics-port: 9000\n"),
            (8080, 9000, "/actuator/prometheus"),
            vec![("SERVER_PORT", "8080"), ("management.server.port", "9000")],
            vec!["METRICS_PORT", "METRICS_PATH", "MANAGEMENT_SERVER_PORT"],
        ),
    ];
    for (fw, paas_config, (app, metrics, path), present, absent) in cases {
        let files: Vec<(&str, &str)> = paas_config
            .map(|text| vec![("charm/paas-config.yaml", text)])
            .unwrap_or_default();
        let mut f = project(fw, "", "", &files);
        match paas_config {
            Some(_) => assert_eq!(f.project.paas_charm, PaasCharmLine::Main, "{fw}"),
            None => {
                assert_eq!(f.project.paas_charm, PaasCharmLine::V1_12, "{fw}");
                f.project.paas_charm = PaasCharmLine::Main;
            }
        }
        let p = plan(&f, &state());
        let what = format!("{fw} {paas_config:?}");
        assert_eq!(
            (p.ports.app, p.ports.metrics, p.ports.metrics_path.as_str()),
            (app, metrics, path),
            "{what}"
        );
        for (var, value) in present {
            assert_eq!(
                p.environment.get(var).map(String::as_str),
                Some(value),
                "{what}: {var}"
            );
        }
        for var in absent {
            assert!(!p.environment.contains_key(var), "{what}: {var} is set");
        }
        if paas_config == Some("port: 9000\n") {
            assert!(
                p.notes.iter().any(|n| n.contains("set metrics-port: 9000")),
                "{what}: {:?}",
                p.notes
            );
        }
    }
}

/// paas-charm 1.12 (a project whose paas-config.yaml sets no port): the options decide and
/// nothing of main's variables appears.
#[test]
fn ports_follow_paas_charm_1_12_without_paas_config_ports() {
    let cases: Vec<(Framework, (u16, u16), Vec<(&str, &str)>, Vec<&str>)> = vec![
        (
            Framework::Flask,
            (8000, 9102),
            vec![],
            vec!["FLASK_METRICS_PORT"],
        ),
        (
            Framework::FastApi,
            (8080, 8080),
            vec![("UVICORN_PORT", "8080"), ("METRICS_PORT", "8080")],
            vec![],
        ),
        (
            Framework::Go,
            (8080, 8080),
            vec![("APP_PORT", "8080"), ("APP_METRICS_PORT", "8080")],
            vec!["PORT", "METRICS_PORT"],
        ),
        (
            Framework::ExpressJs,
            (8080, 8080),
            vec![("METRICS_PORT", "8080")],
            vec![],
        ),
        (
            Framework::SpringBoot,
            (8080, 8080),
            vec![
                ("MANAGEMENT_SERVER_PORT", "8080"),
                ("METRICS_PATH", "/actuator/prometheus"),
            ],
            vec!["management.server.port"],
        ),
    ];
    for (fw, (app, metrics), present, absent) in cases {
        let f = project(
            fw,
            "",
            "",
            &[("charm/paas-config.yaml", "framework_logging_format: json\n")],
        );
        assert_eq!(f.project.paas_charm, PaasCharmLine::V1_12, "{fw}");
        let p = plan(&f, &state());
        assert_eq!((p.ports.app, p.ports.metrics), (app, metrics), "{fw}");
        for (var, value) in present {
            assert_eq!(
                p.environment.get(var).map(String::as_str),
                Some(value),
                "{fw}: {var}"
            );
        }
        for var in absent {
            assert!(!p.environment.contains_key(var), "{fw}: {var} is set");
        }
    }
}

#[test]
fn secret_options_expose_each_key() {
    let f = flask("config:\n  options:\n    api-token: {type: secret}\n");
    let mut s = state();
    s.secrets.insert(
        "cru00lvmp25c77qa0qrg".into(),
        SecretView {
            name: Some("my-api-token".into()),
            content: Some(
                [
                    ("value".into(), "1234".into()),
                    ("othervalue".into(), "5678".into()),
                ]
                .into_iter()
                .collect(),
            ),
        },
    );
    set(&mut s, "api-token", json!("secret:cru00lvmp25c77qa0qrg"));
    let p = plan(&f, &s);
    assert_eq!(p.environment["FLASK_API_TOKEN_VALUE"], "1234");
    assert_eq!(p.environment["FLASK_API_TOKEN_OTHERVALUE"], "5678");
    assert!(p.redact("token 1234").contains("<redacted>"));

    s.secrets["cru00lvmp25c77qa0qrg"].content = None;
    let p = plan(&f, &s);
    assert_eq!(
        (p.status.state, p.status.message.as_str()),
        (State::Blocked, "secret my-api-token is not granted to web")
    );
    // paas-charm does not replan on a config error: the running app keeps its plan.
    assert_eq!(p.status.services, ServicesAction::Hold);

    set(&mut s, "api-token", json!("1234"));
    let p = plan(&f, &s);
    assert_eq!(p.status.message, "invalid options: api-token");
}

#[test]
fn missing_required_options_stop_the_app_without_trailing_spaces() {
    let f = flask("config:\n  options:\n    token: {type: string, optional: false}\n    other: {type: string, optional: false}\n");
    let p = plan(&f, &state());
    assert_eq!(p.status.state, State::Blocked);
    assert_eq!(p.status.message, "missing options: token, other");
    assert_eq!(p.status.services, ServicesAction::Stop);
    assert!(
        p.services
            .values()
            .all(|s| s.startup == Some(Startup::Disabled)),
        "the app waits for its configuration"
    );
    let mut s = state();
    set(&mut s, "token", json!("t"));
    set(&mut s, "other", json!("o"));
    let p = plan(&f, &s);
    assert_eq!(p.status.state, State::Active);
    assert_eq!(p.services["flask"].startup, Some(Startup::Enabled));
}

#[test]
fn missing_and_invalid_options_share_one_message() {
    let f = flask("config:\n  options:\n    token: {type: string, optional: false}\n");
    let mut s = state();
    set(&mut s, "flask-permanent-session-lifetime", json!(0));
    let p = plan(&f, &s);
    assert_eq!(
        p.status.message,
        "missing options: token, invalid options: flask-permanent-session-lifetime"
    );
}

#[test]
fn missing_required_integrations_are_listed_in_paas_charm_order() {
    let f = flask(
        "requires:\n  redis: {interface: redis, optional: false}\n  postgresql: {interface: postgresql_client, optional: false}\n  s3: {interface: s3, optional: true}\n  valkey: {interface: valkey_client, optional: false}\n",
    );
    let p = plan(&f, &state());
    assert_eq!(p.status.message, "missing integrations: postgresql, redis");
    assert_eq!(p.status.services, ServicesAction::Stop);
    assert!(p
        .services
        .values()
        .all(|s| s.startup == Some(Startup::Disabled)));
}

/// Relation data that is not complete yet (RabbitMQ without a password, Redis
/// `redis://host:None`, a database without credentials): paas-charm's requirers return no
/// data, so the integration counts as not there: active without its variables, or
/// `missing integrations` when required. Only http-proxy blocks on such data.
#[test]
fn incomplete_relation_data_counts_as_not_integrated_yet() {
    type Case<'a> = (
        Framework,
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        State,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Framework::Flask,
            "redis: {interface: redis}",
            "redis",
            vec![("uri", "redis://cache:None")],
            State::Active,
            "",
            "REDIS_",
        ),
        (
            Framework::Flask,
            "redis: {interface: redis, optional: false}",
            "redis",
            vec![("uri", "redis://cache:None")],
            State::Blocked,
            "missing integrations: redis",
            "REDIS_",
        ),
        (
            Framework::Go,
            "rabbitmq: {interface: rabbitmq}",
            "rabbitmq",
            vec![("username", "web"), ("hostname", "mq")],
            State::Active,
            "",
            "RABBITMQ_",
        ),
        (
            Framework::Go,
            "rabbitmq: {interface: rabbitmq, optional: false}",
            "rabbitmq",
            vec![("username", "web"), ("hostname", "mq")],
            State::Blocked,
            "missing integrations: rabbitmq",
            "RABBITMQ_",
        ),
        (
            Framework::FastApi,
            "postgresql: {interface: postgresql_client, optional: false}",
            "postgresql",
            vec![("username", "web")],
            State::Blocked,
            "missing integrations: postgresql",
            "POSTGRESQL_",
        ),
        (
            Framework::Django,
            "postgresql: {interface: postgresql_client}",
            "postgresql",
            vec![("username", "web")],
            State::Blocked,
            "Django requires a database integration to work",
            "POSTGRESQL_",
        ),
        (
            Framework::Flask,
            "http-proxy: {interface: http_proxy}",
            "http-proxy",
            vec![],
            State::Blocked,
            "http-proxy relation data is either unavailable, invalid or not usable.",
            "HTTP_PROXY",
        ),
    ];
    for (fw, requires, endpoint, data, state_want, message, prefix) in cases {
        let f = project(fw, &format!("requires:\n  {requires}\n"), "", &[]);
        let mut s = state();
        s.integrations.insert(
            endpoint.into(),
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let p = plan(&f, &s);
        assert_eq!(
            (p.status.state, p.status.message.as_str()),
            (state_want, message),
            "{fw} {requires} {data:?}"
        );
        assert!(
            !p.environment.keys().any(|k| k.starts_with(prefix)),
            "{fw} {requires}: {:?}",
            p.environment.keys().collect::<Vec<_>>()
        );
    }
    // Spring Boot with tracing data that has no endpoint yet keeps OTEL exporters off.
    let f = project(
        Framework::SpringBoot,
        "requires:\n  tracing: {interface: tracing}\n",
        "",
        &[],
    );
    let mut s = state();
    s.integrations.insert("tracing".into(), Default::default());
    let p = plan(&f, &s);
    assert_eq!(p.status.state, State::Active, "{}", p.status.message);
    assert_eq!(p.environment["OTEL_TRACES_EXPORTER"], "none");
}

#[test]
fn django_requires_a_database() {
    let f = project(Framework::Django, "", "", &[]);
    let p = plan(&f, &state());
    assert_eq!(
        (p.status.state, p.status.message.as_str()),
        (
            State::Blocked,
            "Django requires a database integration to work"
        )
    );
}

#[test]
fn worker_class_rules() {
    let cases: Vec<(Option<&str>, &str, Result<&str, &str>)> =
        vec![
        (None, "flask\n", Ok("sync")),
        (None, "flask\ngunicorn[gevent]\n", Ok("gevent")),
        (None, "flask\nGunicorn [setproctitle, gevent]==23.0\n", Ok("gevent")),
        (None, "flask\ngevent\npackaging\n", Ok("gevent")),
        (Some("gevent"), "flask\ngunicorn[gevent]\n", Ok("gevent")),
        (Some("sync"), "flask\ngevent\n", Ok("sync")),
        // gevent alone: `import gevent` works but gunicorn's gevent worker crashes
        // (`No module named 'packaging'`), so the charms' message, not a crash.
        (
            None,
            "flask\ngevent\n",
            Err("gunicorn[gevent] must be installed in the rock. https://bit.ly/flask-async-doc"),
        ),
        (
            Some("gevent"),
            "flask\ngevent\n",
            Err("gunicorn[gevent] must be installed in the rock. https://bit.ly/flask-async-doc"),
        ),
        (
            Some("gevent"),
            "flask\ngunicorn[setproctitle]\ngevent\n",
            Err("gunicorn[gevent] must be installed in the rock. https://bit.ly/flask-async-doc"),
        ),
        (
            Some("gevent"),
            "flask\n",
            Err("gunicorn[gevent] must be installed in the rock. https://bit.ly/flask-async-doc"),
        ),
        (
            Some("eventlet"),
            "flask\n",
            Err("Only 'gevent' and 'sync' are allowed. https://bit.ly/flask-async-doc"),
        ),
    ];
    for (class, reqs, want) in cases {
        let f = project(Framework::Flask, "", "", &[("requirements.txt", reqs)]);
        let mut s = state();
        if let Some(c) = class {
            set(&mut s, "webserver-worker-class", json!(c));
        }
        let p = plan(&f, &s);
        match want {
            Ok(k) => assert!(
                p.status.state == State::Active
                    && p.services["flask"]
                        .command
                        .as_deref()
                        .unwrap()
                        .ends_with(&format!("-k [ {k} ]")),
                "{reqs:?}: {:?} {:?}",
                p.status,
                p.services["flask"].command
            ),
            Err(m) => assert_eq!(p.status.message, m, "{class:?} {reqs:?}"),
        }
    }
    let f = project(
        Framework::Flask,
        "",
        "services:\n  flask:\n    override: merge\n    command: /bin/python3 -m gunicorn app:app\n",
        &[],
    );
    let mut s = state();
    set(&mut s, "webserver-worker-class", json!("sync"));
    assert_eq!(
        plan(&f, &s).status.message,
        "Worker class is set through `juju config` but the `-k` worker class argument is not in the service command."
    );
}

#[test]
fn gunicorn_config_carries_the_port_and_webserver_options() {
    let f = flask("");
    let mut s = state();
    set(&mut s, "webserver-workers", json!(3));
    set(&mut s, "webserver-timeout", json!(30));
    s.network.app_port = Some(18001);
    s.network.bind_host = Some("127.0.0.1".into());
    let p = plan(&f, &s);
    let conf = &p.files["/flask/gunicorn.conf.py"];
    assert!(conf.contains("bind = ['127.0.0.1:18001']"), "{conf}");
    assert!(
        conf.contains("workers = 3\n") && conf.contains("timeout = 30\n"),
        "{conf}"
    );
    assert_eq!(p.environment["FLASK_BASE_URL"], "http://web.default:18001");
}

#[test]
fn assigned_ports_reach_every_framework_port_variable() {
    for (fw, var) in [
        (Framework::FastApi, "UVICORN_PORT"),
        (Framework::Go, "APP_PORT"),
        (Framework::ExpressJs, "PORT"),
        (Framework::SpringBoot, "SERVER_PORT"),
    ] {
        let f = project(fw, "", "", &[]);
        let mut s = state();
        s.network.app_port = Some(18080);
        let p = plan(&f, &s);
        assert_eq!(p.environment[var], "18080", "{fw}");
        assert_eq!(
            p.ports.metrics, 18080,
            "{fw}: metrics served on the app port follow it"
        );
    }
}

const WORKERS: &str = "services:\n  celery-worker:\n    override: replace\n    command: celery -A app worker\n    startup: enabled\n  celery-beat-scheduler:\n    override: replace\n    command: celery -A app beat\n    startup: enabled\n  other:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n    environment: {OWN: '1'}\n";

#[test]
fn workers_get_the_app_env_on_every_unit_and_other_services_none() {
    let f = project(Framework::Flask, TOKEN_OPTION, WORKERS, &[]);
    let mut s = state();
    s.units = vec![0, 1, 2];
    set(&mut s, "token", json!("t"));
    for unit in [0, 1, 2] {
        s.unit = unit;
        let p = plan(&f, &s);
        assert_eq!(
            p.services["celery-worker"].startup,
            Some(Startup::Enabled),
            "unit {unit}"
        );
        assert_eq!(env(&p, "celery-worker")["FLASK_TOKEN"], "t");
        assert_eq!(env(&p, "other").len(), 1, "untouched: only its own env");
    }
}

#[test]
fn scheduler_runs_only_on_unit_zero_or_the_lowest_live_unit() {
    let f = project(Framework::Flask, "", WORKERS, &[]);
    for (units, expected) in [(vec![0, 1, 2], 0), (vec![1, 2], 1), (vec![3, 2, 5], 2)] {
        let mut s = state();
        s.units = units.clone();
        for &unit in &units {
            s.unit = unit;
            let p = plan(&f, &s);
            let want = if unit == expected {
                Startup::Enabled
            } else {
                Startup::Disabled
            };
            assert_eq!(
                p.services["celery-beat-scheduler"].startup,
                Some(want),
                "units {units:?} unit {unit}"
            );
            assert_eq!(p.scheduler_unit, Some(expected));
            assert!(env(&p, "celery-beat-scheduler").contains_key("FLASK_SECRET_KEY"));
        }
    }
}

#[test]
fn migration_precedence_follows_paas_charm() {
    let cases: Vec<(Framework, Vec<&str>, Option<Vec<&str>>)> = vec![
        (Framework::Flask, vec![], None),
        (
            Framework::Flask,
            vec!["migrate"],
            Some(vec!["/flask/app/migrate"]),
        ),
        (
            Framework::Flask,
            vec!["migrate", "migrate.sh"],
            Some(vec!["bash", "-eo", "pipefail", "migrate.sh"]),
        ),
        (
            Framework::FastApi,
            vec!["migrate.sh", "migrate.py"],
            Some(vec!["python3", "migrate.py"]),
        ),
        (Framework::Go, vec!["migrate"], Some(vec!["/app/migrate"])),
    ];
    for (fw, files, want) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|f| (*f, "true\n")).collect();
        let f = project(fw, "", "", &files);
        let p = plan(&f, &state());
        assert_eq!(
            p.migration.as_ref().map(|m| m.command.clone()),
            want.map(|w| w.iter().map(|s| s.to_string()).collect()),
            "{fw} {files:?}"
        );
    }
    // Django: manage.py in the project directory wins over migrate.sh.
    let f = project(
        Framework::Django,
        "",
        "",
        &[("web/manage.py", ""), ("web/migrate.sh", "")],
    );
    let m = plan(&f, &state()).migration.unwrap();
    assert_eq!(m.command, ["python3", "manage.py", "migrate"]);
    assert_eq!(
        (m.working_dir.as_str(), m.user.as_str()),
        ("/django/app", "_daemon_")
    );
}

#[test]
fn actions_include_the_extensions_and_the_projects() {
    let f = project(
        Framework::Django,
        "actions:\n  clearsession:\n    description: Clear sessions.\n  undeclared-handler:\n    description: no file\n",
        "",
        &[("web/actions/clearsession.sh", "true\n")],
    );
    let p = plan(&f, &state());
    assert_eq!(p.actions["rotate-secret-key"].run, ActionRun::Builtin);
    match &p.actions["create-superuser"].run {
        ActionRun::Command {
            command,
            working_dir,
        } => {
            assert_eq!(
                command,
                &["python3", "manage.py", "createsuperuser", "--noinput"]
            );
            assert_eq!(working_dir, "/django/app");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.actions["create-superuser"].required,
        ["username", "email"]
    );
    assert!(
        matches!(&p.actions["clearsession"].run, ActionRun::Command { command, .. } if command == &["bash", "-eo", "pipefail", "actions/clearsession.sh"])
    );
    assert_eq!(p.actions["undeclared-handler"].run, ActionRun::Missing);
}

#[test]
fn every_profile_plans_active_with_an_empty_state_except_django() {
    for fw in ALL_FRAMEWORKS {
        let dir = tempfile::tempdir().unwrap();
        twelve_project::init::init(fw.extension(), "hello", dir.path()).unwrap();
        let project = twelve_project::Project::load(dir.path()).unwrap();
        let p = twelve_charm::plan_unit(&project, &state());
        if fw == Framework::Django {
            assert_eq!(
                p.status.message,
                "Django requires a database integration to work"
            );
        } else {
            assert_eq!(p.status.state, State::Active, "{fw}: {}", p.status.message);
            assert!(p.services[fw.service_name()].startup == Some(Startup::Enabled));
        }
    }
}

#[test]
fn the_ready_check_is_tcp_unless_the_project_names_a_path() {
    let f = flask("");
    let p = plan(&f, &state());
    assert_eq!(
        p.checks["flask-ready"].tcp.as_ref().unwrap().port,
        Some(8000)
    );
    let f = project(
        Framework::Flask,
        "",
        "",
        &[("charm/paas-config.yaml", "healthcheck:\n  path: /health\n")],
    );
    let p = plan(&f, &state());
    assert_eq!(
        p.checks["flask-ready"]
            .http
            .as_ref()
            .unwrap()
            .url
            .as_deref(),
        Some("http://127.0.0.1:8000/health")
    );
}

#[test]
fn scrape_targets_expand_star_per_unit_and_scheduler_to_one_unit() {
    use twelve_charm::metrics::{scrape_groups, ScrapeUnit};
    let paas = "prometheus:\n  scrape_configs:\n    - job_name: custom\n      static_configs:\n        - targets: ['*:9090', '@scheduler:8082', 'db:9187']\n          labels: {team: web}\n";
    let units: Vec<ScrapeUnit> = [(1, 7001), (2, 7002)]
        .iter()
        .map(|(n, p)| ScrapeUnit {
            number: *n,
            host: "127.0.0.1".into(),
            metrics_port: *p,
        })
        .collect();
    let go = project(Framework::Go, "", "", &[("charm/paas-config.yaml", paas)]);
    let groups = scrape_groups(&go.project, "web", 3, &units, Some(1), "/metrics");
    let by_job = |job: &str| {
        groups
            .iter()
            .filter(|g| g.labels["job"] == job)
            .map(|g| (g.labels["unit"].clone(), g.targets[0].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by_job("web"),
        [
            ("web/1".to_string(), "127.0.0.1:7001".to_string()),
            ("web/2".into(), "127.0.0.1:7002".into())
        ]
    );
    assert_eq!(
        by_job("custom"),
        [
            ("web/1".to_string(), "127.0.0.1:9090".to_string()),
            ("web/2".into(), "127.0.0.1:9090".into()),
            ("web/1".into(), "127.0.0.1:8082".into()),
            ("web/1".into(), "db:9187".into())
        ]
    );
    assert!(groups
        .iter()
        .all(|g| g.labels["release"] == "3" && g.labels["framework"] == "go"));
    assert!(groups
        .iter()
        .filter(|g| g.labels["job"] == "custom")
        .all(|g| g.labels["team"] == "web"));
    for fw in [Framework::Flask, Framework::Django] {
        let f = project(fw, "", "", &[]);
        let groups = scrape_groups(&f.project, "web", 1, &units, Some(1), "/metrics");
        let got: Vec<(String, String, String)> = groups
            .iter()
            .map(|g| {
                (
                    g.labels["unit"].clone(),
                    g.targets[0].clone(),
                    g.labels["__metrics_path__"].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "web/1".to_string(),
                    "127.0.0.1:7001".to_string(),
                    "/metrics".to_string()
                ),
                ("web/2".into(), "127.0.0.1:7002".into(), "/metrics".into())
            ],
            "{fw}: the default job scrapes each unit's statsd exporter"
        );
        assert!(groups
            .iter()
            .all(|g| g.labels["job"] == "web" && g.labels["framework"] == fw.name()));
    }
}

#[test]
fn gunicorn_units_run_a_statsd_exporter_like_the_rocks() {
    // (framework, assigned metrics and statsd ports, bind host) ->
    // (exporter command, statsd_host in gunicorn.conf.py, STATSD_PORT)
    let cases: &[(Framework, Option<(u16, u16)>, Option<&str>, &str, &str, Option<&str>)] = &[
        (
            Framework::Flask,
            None,
            None,
            "twelve statsd-exporter --statsd-listen 127.0.0.1:9125 --web-listen 0.0.0.0:9102 --prefix flask",
            "statsd_host = 'localhost:9125'\n",
            None,
        ),
        (
            Framework::Django,
            None,
            None,
            "twelve statsd-exporter --statsd-listen 127.0.0.1:9125 --web-listen 0.0.0.0:9102 --prefix django",
            "statsd_host = 'localhost:9125'\n",
            None,
        ),
        (
            Framework::Flask,
            Some((20102, 20125)),
            Some("127.0.0.1"),
            "twelve statsd-exporter --statsd-listen 127.0.0.1:20125 --web-listen 127.0.0.1:20102 --prefix flask",
            "statsd_host = 'localhost:20125'\n",
            Some("20125"),
        ),
    ];
    for (fw, assigned, host, command, statsd_host, statsd_port) in cases {
        let f = project(*fw, "", "", &[]);
        let mut s = state();
        if let Some((metrics, statsd)) = assigned {
            s.network.app_port = Some(20100);
            s.network.metrics_port = Some(*metrics);
            s.network.statsd_port = Some(*statsd);
        }
        s.network.bind_host = host.map(str::to_string);
        let p = plan(&f, &s);
        let exporter = &p.services["statsd-exporter"];
        assert_eq!(exporter.command.as_deref(), Some(*command), "{fw}");
        if *fw == Framework::Flask {
            assert_eq!(exporter.startup, Some(Startup::Enabled));
        } // Django is blocked without a database: every service is disabled.
        assert!(exporter.environment.is_empty(), "{fw}: not the app's env");
        assert_eq!(
            exporter.user.as_deref(),
            Some("_daemon_"),
            "{fw}: the app user, as every rock service"
        );
        let main = &p.services[fw.service_name()];
        assert_eq!(main.after, ["statsd-exporter"], "{fw}");
        let conf = &p.files[&format!("/{}/gunicorn.conf.py", fw.name())];
        assert!(conf.contains(statsd_host), "{fw}: {conf}");
        assert_eq!(
            p.ports.statsd,
            Some(assigned.map(|a| a.1).unwrap_or(9125)),
            "{fw}"
        );
        assert_eq!(p.ports.metrics, assigned.map(|a| a.0).unwrap_or(9102));
        assert_eq!(
            p.environment.get("STATSD_PORT").map(String::as_str),
            *statsd_port,
            "{fw}: the charms give no variable; twelve names a port it assigned"
        );
        if statsd_port.is_some() {
            assert_eq!(p.environment["STATSD_HOST"], "localhost");
            assert_eq!(env(&p, fw.service_name())["STATSD_PORT"], "20125");
        }
    }
}

#[test]
fn other_frameworks_have_no_statsd_exporter() {
    for fw in [
        Framework::FastApi,
        Framework::Go,
        Framework::ExpressJs,
        Framework::SpringBoot,
    ] {
        let f = project(fw, "", "", &[]);
        let mut s = state();
        s.network.statsd_port = Some(20125);
        let p = plan(&f, &s);
        assert!(!p.services.contains_key("statsd-exporter"), "{fw}");
        assert!(p.services[fw.service_name()].after.is_empty(), "{fw}");
        assert_eq!(p.ports.statsd, None);
        assert!(!p.environment.contains_key("STATSD_PORT"), "{fw}");
    }
}

#[test]
fn the_exporter_follows_the_status_and_a_custom_metrics_path() {
    // Stopped with the app when a required option is missing.
    let f = flask(
        TOKEN_OPTION
            .replace("type: string", "type: string\n      optional: false")
            .as_str(),
    );
    let p = plan(&f, &state());
    assert_eq!(p.status.state, State::Blocked);
    assert_eq!(
        p.services["statsd-exporter"].startup,
        Some(Startup::Disabled)
    );
    // A paas-config.yaml metrics-path is the exporter's path.
    let f = project(
        Framework::Flask,
        "",
        "",
        &[("charm/paas-config.yaml", "metrics-path: /stats\n")],
    );
    let p = plan(&f, &state());
    assert!(
        p.services["statsd-exporter"]
            .command
            .as_deref()
            .unwrap()
            .ends_with("--prefix flask --web-path /stats"),
        "{:?}",
        p.services["statsd-exporter"].command
    );
    // The project's own statsd-exporter (the rock's, running /bin/statsd_exporter) is
    // replaced by twelve's.
    let f = project(
        Framework::Flask,
        "",
        "services:\n  statsd-exporter:\n    override: replace\n    command: /bin/statsd_exporter --statsd.listen-udp=localhost:9125\n    startup: enabled\n",
        &[],
    );
    let p = plan(&f, &state());
    assert!(p.services["statsd-exporter"]
        .command
        .as_deref()
        .unwrap()
        .starts_with("twelve statsd-exporter "));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("replaced by twelve's built-in exporter")),
        "{:?}",
        p.notes
    );
}

/// Redaction hides secret values, not every text that contains a short secret by chance.
#[test]
fn redaction_hides_values_and_words_not_parts_of_words() {
    use twelve_charm::plan::{redact_values_with, redact_with};
    let secrets: std::collections::BTreeSet<String> =
        ["fig", "s3cr3t-pass", "p@ss"].map(String::from).into();
    let cases: Vec<(&str, &str, &str)> = vec![
        // (text, redact_with, redact_values_with)
        ("fig", "<redacted>", "<redacted>"),
        ("ConfigMap", "ConfigMap", "ConfigMap"),
        ("web-config", "web-config", "web-config"),
        (
            "postgresql://u:fig@db:5432/web",
            "postgresql://u:<redacted>@db:5432/web",
            "postgresql://u:fig@db:5432/web",
        ),
        (
            "postgresql://u:s3cr3t-pass@db/web",
            "postgresql://u:<redacted>@db/web",
            "postgresql://u:<redacted>@db/web",
        ),
        ("xs3cr3t-passx", "x<redacted>x", "x<redacted>x"),
        (
            "amqp://u:p%40ss@mq:5672/%2F",
            "amqp://u:<redacted>@mq:5672/%2F",
            "amqp://u:p%40ss@mq:5672/%2F",
        ),
        ("fig,fig", "<redacted>,<redacted>", "fig,fig"),
        ("figs fig", "figs <redacted>", "figs fig"),
    ];
    for (text, shown, value_shown) in cases {
        assert_eq!(redact_with(&secrets, text), shown, "{text}");
        assert_eq!(redact_values_with(&secrets, text), value_shown, "{text}");
    }
}

/// `framework_logging_format` (paas-charm 1.11, uvicorn on main): for each framework and
/// value, whether the server is configured for JSON lines: gunicorn's config gains the JSON
/// logger class, FastAPI's unit gets uvicorn's log config and formatter module as files
/// with `UVICORN_LOG_CONFIG` and `PYTHONPATH` naming them; Go, Express and Spring Boot keep
/// their own format, with a note.
#[test]
fn framework_logging_format_json_configures_gunicorn_and_uvicorn() {
    for fw in ALL_FRAMEWORKS {
        for value in [None, Some("none"), Some("json")] {
            let files: Vec<(&str, String)> = value
                .map(|v| {
                    (
                        "charm/paas-config.yaml",
                        format!("framework_logging_format: {v}\n"),
                    )
                })
                .into_iter()
                .collect();
            let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
            let f = project(fw, "", "", &files);
            let p = plan(&f, &state());
            let json = value == Some("json");
            let what = format!("{fw} {value:?}");
            let conf = p.files.get(&format!("/{}/gunicorn.conf.py", fw.name()));
            if fw.is_gunicorn() {
                assert_eq!(
                    conf.unwrap().contains("logger_class = TwelveJsonLogger"),
                    json,
                    "{what}"
                );
            }
            let log_config = p
                .files
                .get("/tmp/fastapi/log_config/uvicorn-log-config.json");
            let module = p
                .files
                .get("/tmp/fastapi/log_config/uvicorn_log_handler.py");
            let uvicorn = fw == Framework::FastApi && json;
            assert_eq!(log_config.is_some(), uvicorn, "{what}");
            assert_eq!(module.is_some(), uvicorn, "{what}");
            assert_eq!(
                p.environment.get("UVICORN_LOG_CONFIG").map(String::as_str),
                uvicorn.then_some("/tmp/fastapi/log_config/uvicorn-log-config.json"),
                "{what}"
            );
            assert_eq!(
                p.environment.get("PYTHONPATH").map(String::as_str),
                uvicorn.then_some("/tmp/fastapi/log_config"),
                "{what}"
            );
            if uvicorn {
                // The environment reaches the web service, and the config names the module.
                assert!(env(&p, "fastapi").contains_key("UVICORN_LOG_CONFIG"));
                let cfg: serde_json::Value = serde_json::from_str(log_config.unwrap()).unwrap();
                assert_eq!(
                    cfg["formatters"]["json"]["()"],
                    "uvicorn_log_handler.JsonLines"
                );
                assert_eq!(
                    cfg["loggers"]["uvicorn.access"]["handlers"],
                    json!(["access"])
                );
                assert!(module
                    .unwrap()
                    .contains("class JsonLines(logging.Formatter)"));
            }
            let noted = f
                .project
                .notes
                .iter()
                .any(|n| n.message.contains("is not supported for the"));
            assert_eq!(noted, json && !fw.supports_json_logs(), "{what}");
        }
    }
}
