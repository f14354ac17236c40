use crate::*;

fn layer(order: u32, label: &str, yaml: &str) -> Layer {
    Layer::parse(order, label, yaml).unwrap_or_else(|e| panic!("{label}: {e}"))
}

#[test]
fn merge_overrides_set_fields_and_merges_environment() {
    let base = layer(
        1,
        "base",
        "services:\n  server:\n    override: replace\n    command: /usr/bin/server\n    startup: enabled\n    environment:\n      PORT: 5000\n      DATABASE: postgres://x\n",
    );
    let over = layer(
        2,
        "over",
        "services:\n  server:\n    override: merge\n    environment:\n      PORT: '8080'\n      VERBOSE_LOGGING: 1\n",
    );
    let plan = Plan::from_layers([&base, &over]).unwrap();
    let s = &plan.services["server"];
    assert_eq!(s.command.as_deref(), Some("/usr/bin/server"));
    assert_eq!(s.startup(), Startup::Enabled);
    let env: Vec<(&str, &str)> = s
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("PORT", "8080"),
            ("DATABASE", "postgres://x"),
            ("VERBOSE_LOGGING", "1")
        ]
    );
}

#[test]
fn replace_discards_the_earlier_definition() {
    let base = layer(1, "base", "services:\n  s:\n    override: replace\n    command: a\n    environment: {A: x}\n    after: [t]\n  t:\n    override: replace\n    command: t\n");
    let over = layer(
        2,
        "over",
        "services:\n  s:\n    override: replace\n    command: b\n",
    );
    let plan = Plan::from_layers([&over, &base]).unwrap();
    let s = &plan.services["s"];
    assert_eq!(s.command.as_deref(), Some("b"));
    assert!(s.environment.is_empty());
    assert!(s.after.is_empty());
}

#[test]
fn merge_appends_lists() {
    let a = layer(1, "aaa", "services:\n  x: {override: replace, command: x, after: [y]}\n  y: {override: replace, command: y}\n  z: {override: replace, command: z}\n");
    let b = layer(2, "bbb", "services:\n  x: {override: merge, after: [z]}\n");
    let plan = Plan::from_layers([&a, &b]).unwrap();
    assert_eq!(plan.services["x"].after, ["y", "z"]);
}

#[test]
fn every_entry_must_say_how_it_overrides() {
    let err = Layer::parse(1, "base", "services:\n  srv:\n    command: foo\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"layer "base" must define "override" for service "srv""#
    );
    let err = Layer::parse(1, "base", "checks:\n  up:\n    tcp: {port: 80}\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"layer "base" must define "override" for check "up""#
    );
}

#[test]
fn unknown_fields_are_refused_with_a_line() {
    let err = Layer::parse(
        1,
        "base",
        "services:\n  srv:\n    override: merge\n    comand: foo\n",
    )
    .unwrap_err();
    match err {
        LayerError::Parse { line, message, .. } => {
            assert_eq!(line, Some(4));
            assert!(message.contains("comand"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn plan_needs_a_command_for_every_service() {
    let l = layer(
        1,
        "base",
        "services:\n  srv:\n    override: merge\n    startup: enabled\n",
    );
    let err = Plan::from_layers([&l]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"plan must define "command" for service "srv""#
    );
}

#[test]
fn checks_need_exactly_one_kind() {
    let none = layer(
        1,
        "base",
        "checks:\n  c:\n    override: replace\n    period: 1s\n",
    );
    assert!(matches!(
        Plan::from_layers([&none]),
        Err(LayerError::NoCheckType(_))
    ));
    let two = layer(
        1,
        "base",
        "checks:\n  c:\n    override: replace\n    tcp: {port: 1}\n    http: {url: 'http://x/'}\n",
    );
    assert!(matches!(
        Plan::from_layers([&two]),
        Err(LayerError::ManyCheckTypes(_))
    ));
}

#[test]
fn check_defaults_and_timeout_cap() {
    let l = layer(1, "base", "checks:\n  c:\n    override: replace\n    period: 2s\n    timeout: 5s\n    tcp: {port: 8080}\n");
    let plan = Plan::from_layers([&l]).unwrap();
    let c = &plan.checks["c"];
    assert_eq!(c.timeout(), std::time::Duration::from_secs(2));
    assert_eq!(c.threshold(), 3);
    assert_eq!(c.startup(), Startup::Enabled);
}

#[test]
fn before_after_loops_are_refused() {
    let l = layer(1, "base", "services:\n  a: {override: replace, command: a, after: [b]}\n  b: {override: replace, command: b, after: [a]}\n");
    let err = Plan::from_layers([&l]).unwrap_err();
    assert_eq!(err.to_string(), "services in before/after loop: a, b");
}

#[test]
fn start_order_follows_after_and_pulls_in_requires() {
    let l = layer(
        1,
        "base",
        "services:\n  web: {override: replace, command: w, requires: [db], after: [db]}\n  db: {override: replace, command: d}\n  other: {override: replace, command: o}\n",
    );
    let plan = Plan::from_layers([&l]).unwrap();
    assert_eq!(plan.start_order(&["web".into()]).unwrap(), ["db", "web"]);
    assert_eq!(plan.stop_order(&["db".into()]).unwrap(), ["web", "db"]);
}

#[test]
fn layer_file_names() {
    assert_eq!(
        parse_layer_file_name("001-base-layer.yaml").unwrap(),
        Some((1, "base-layer".into()))
    );
    assert_eq!(parse_layer_file_name("README").unwrap(), None);
    assert!(parse_layer_file_name("1-base.yaml").is_err());
    assert!(parse_layer_file_name("001-B.yaml").is_err());
    assert!(parse_layer_file_name("001-ab.yaml").is_err());
}

#[test]
fn plan_yaml_round_trips() {
    let l = layer(1, "base", "services:\n  srv:\n    override: replace\n    command: foo [ --x ]\n    backoff-delay: 1s\n    environment: {A: '1'}\n");
    let plan = Plan::from_layers([&l]).unwrap();
    let yaml = plan.to_yaml();
    let again = Plan::from_layers([&Layer::parse(1, "again", &yaml).unwrap()]).unwrap();
    assert_eq!(plan.services, again.services);
}

#[test]
fn log_targets_merge_services_and_labels_and_reserve_pebble_labels() {
    let base = layer(
        1,
        "base",
        "services:\n  a: {override: replace, command: a}\n  b: {override: replace, command: b}\nlog-targets:\n  t:\n    override: replace\n    type: loki\n    location: http://loki:3100/loki/api/v1/push\n    services: [all]\n    labels: {unit: $UNIT, app: x}\n",
    );
    let over = layer(
        2,
        "over",
        "log-targets:\n  t:\n    override: merge\n    services: [-a]\n    labels: {app: web}\n",
    );
    let plan = Plan::from_layers([&base, &over]).unwrap();
    let t = &plan.log_targets["t"];
    assert_eq!(t.services, ["all", "-a"]);
    assert_eq!(t.labels["unit"], "$UNIT");
    assert_eq!(t.labels["app"], "web");
    let bad = layer(
        3,
        "bad",
        "log-targets:\n  t:\n    override: merge\n    labels: {pebble_service: x}\n",
    );
    let err = Plan::from_layers([&base, &bad]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plan log target \"t\" has label \"pebble_service\" with the reserved prefix \"pebble_\""
    );
    let bad = layer(
        3,
        "bad",
        "log-targets:\n  t:\n    override: merge\n    services: [nope]\n",
    );
    assert!(Plan::from_layers([&base, &bad]).is_err());
}
