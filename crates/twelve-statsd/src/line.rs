//! The statsd line protocol, parsed as Prometheus' `statsd_exporter` parses it
//! (`pkg/line/line.go`), with DogStatsD tags enabled:
//!
//! ```text
//! <name>:<value>|<type>[|@<sample rate>][|#<tag>:<value>,...][|c:<container>][|T<timestamp>]
//! ```
//!
//! - `c` counter: the value is divided by the sample rate (`@0.1` counts 10 per line).
//! - `g` gauge: a value starting with `+` or `-` is added, else it is set; sample rates are
//!   ignored.
//! - `ms` timer: observed in seconds (the value is divided by 1000), once per
//!   `1 / sample rate`.
//! - `h` histogram and `d` distribution: observed as they are.
//! - `s` set: not supported, as `statsd_exporter` (counted as an error).
//!
//! Several values share one name as `name:1|c:2|c` or, for `ms`/`h`/`d`, `name:1:2:3|ms`.
//! A packet holds several lines separated by newlines.

use std::collections::BTreeMap;

use crate::mapping::escape_metric_name;

/// The most observations one sampled timer value stands for.
pub const MAX_REPEAT: usize = 1000;

/// One sample, ready for the registry (the name is not mapped yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub value: Value,
    /// DogStatsD tags, names escaped like metric names.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Add to a counter.
    Counter(f64),
    /// Set a gauge, or add to it when `relative` (`+3`, `-2`).
    Gauge { value: f64, relative: bool },
    /// One observation of a timer (in seconds), histogram or distribution.
    Observe(f64),
}

/// What a line produced: its events and the reasons of the samples it rejected (the
/// `reason` label of `statsd_exporter_sample_errors_total`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub errors: Vec<&'static str>,
    /// Samples seen, valid or not.
    pub samples: u64,
}

impl Parsed {
    fn extend(&mut self, other: Parsed) {
        self.events.extend(other.events);
        self.errors.extend(other.errors);
        self.samples += other.samples;
    }
}

/// Parses a packet (a UDP datagram): lines separated by `\n` (`\r\n` too).
pub fn parse_packet(packet: &str) -> Parsed {
    let mut out = Parsed::default();
    for line in packet.split('\n') {
        out.extend(parse_line(line.trim_end_matches('\r')));
    }
    out
}

/// Parses one line.
pub fn parse_line(line: &str) -> Parsed {
    let mut out = Parsed::default();
    if line.is_empty() {
        return out;
    }
    let Some((raw_name, rest)) = line.split_once(':') else {
        out.errors.push("malformed_line");
        return out;
    };
    if raw_name.is_empty() {
        out.errors.push("malformed_line");
        return out;
    }
    let dogstatsd = rest.contains("|#");
    let parts: Vec<&str> = rest.splitn(3, '|').collect();
    if parts.len() < 2 {
        out.errors.push("not_enough_parts_after_colon");
        return out;
    }
    let samples: Vec<String> = if parts[0].contains(':') {
        // DogStatsD extended aggregation: `name:1:2:3|ms`.
        if !matches!(parts[1], "ms" | "h" | "d") {
            out.errors.push("invalid_extended_aggregate_type");
            return out;
        }
        let suffix = rest.split_once('|').map(|(_, s)| s).unwrap_or_default();
        parts[0]
            .split(':')
            .map(|v| format!("{v}|{suffix}"))
            .collect()
    } else if dogstatsd {
        vec![rest.to_string()]
    } else {
        rest.split(':').map(str::to_string).collect()
    };

    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    'samples: for sample in &samples {
        out.samples += 1;
        let components: Vec<&str> = sample.split('|').collect();
        if components.len() < 2 || components.len() > 8 {
            out.errors.push("malformed_component");
            continue;
        }
        let (value_str, stat_type) = (components[0], components[1]);
        let relative = value_str.starts_with('+') || value_str.starts_with('-');
        let Some(mut value) = parse_float(value_str) else {
            out.errors.push("malformed_value");
            continue;
        };
        let mut repeat = 1usize;
        if components[2..].iter().any(|c| c.is_empty()) {
            out.errors.push("malformed_component");
            continue;
        }
        for component in &components[2..] {
            match component.as_bytes()[0] {
                b'@' => {
                    let rate = match parse_float(&component[1..]) {
                        Some(r) => r,
                        None => {
                            out.errors.push("invalid_sample_factor");
                            0.0
                        }
                    };
                    let rate = if rate == 0.0 { 1.0 } else { rate };
                    match stat_type {
                        "c" => value /= rate,
                        // Bounded, so that `@0.000001` cannot make a million events.
                        "ms" | "h" | "d" => repeat = ((1.0 / rate) as usize).min(MAX_REPEAT),
                        _ => {}
                    }
                }
                b'#' => parse_tags(&component[1..], &mut labels, &mut out.errors),
                b'c' => match component.strip_prefix("c:").filter(|c| !c.is_empty()) {
                    Some(id) => {
                        labels.insert("container_id".into(), id.to_string());
                    }
                    None => {
                        out.errors.push("malformed_container_id");
                        continue 'samples;
                    }
                },
                b'T' => {
                    // A DogStatsD timestamp: checked, then ignored like statsd_exporter.
                    if component.len() < 2 || component[1..].parse::<i64>().is_err() {
                        out.errors.push("malformed_timestamp");
                        continue 'samples;
                    }
                }
                _ => {
                    out.errors.push("invalid_sample_factor");
                    continue 'samples;
                }
            }
        }
        let value = match stat_type {
            "c" => Value::Counter(value),
            "g" => Value::Gauge { value, relative },
            "ms" => Value::Observe(value / 1000.0),
            "h" | "d" => Value::Observe(value),
            _ => {
                // Sets (`s`) are not supported, as in statsd_exporter; neither are unknown types.
                out.errors.push("illegal_event");
                continue;
            }
        };
        for _ in 0..repeat {
            out.events.push(Event {
                name: raw_name.to_string(),
                value,
                labels: labels.clone(),
            });
        }
    }
    out
}

/// A float as Go's `strconv.ParseFloat` reads it (a leading `+` is allowed).
fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok()
}

/// `#k:v,k2:v2` (the `#` already removed); each tag may repeat the `#`.
fn parse_tags(s: &str, labels: &mut BTreeMap<String, String>, errors: &mut Vec<&'static str>) {
    for tag in s.split(',') {
        let tag = tag.strip_prefix('#').unwrap_or(tag);
        match tag.split_once(':') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                labels.insert(escape_metric_name(k), v.to_string());
            }
            _ => errors.push("malformed_tag"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(line: &str) -> Vec<(String, Value)> {
        parse_line(line)
            .events
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect()
    }

    fn one(line: &str) -> Value {
        let ev = events(line);
        assert_eq!(ev.len(), 1, "{line}: {ev:?}");
        ev[0].1
    }

    #[test]
    fn the_types_and_their_values() {
        let cases: &[(&str, Value)] = &[
            ("gunicorn.requests:1|c|@1.0", Value::Counter(1.0)),
            ("hits:3|c", Value::Counter(3.0)),
            ("hits:1|c|@0.1", Value::Counter(10.0)),
            ("hits:2|c|@0.5", Value::Counter(4.0)),
            ("hits:1|c|@0", Value::Counter(1.0)),
            (
                "workers:4|g",
                Value::Gauge {
                    value: 4.0,
                    relative: false,
                },
            ),
            (
                "workers:+2|g",
                Value::Gauge {
                    value: 2.0,
                    relative: true,
                },
            ),
            (
                "workers:-1|g",
                Value::Gauge {
                    value: -1.0,
                    relative: true,
                },
            ),
            (
                "workers:5|g|@0.1",
                Value::Gauge {
                    value: 5.0,
                    relative: false,
                },
            ),
            ("gunicorn.request.duration:12.5|ms", Value::Observe(0.0125)),
            ("size:512|h", Value::Observe(512.0)),
            ("size:2.5|d", Value::Observe(2.5)),
        ];
        for (line, want) in cases {
            assert_eq!(one(line), *want, "{line}");
        }
    }

    #[test]
    fn sampled_timers_repeat_the_observation() {
        let ev = events("t:100|ms|@0.25");
        assert_eq!(ev.len(), 4);
        assert!(ev.iter().all(|(_, v)| *v == Value::Observe(0.1)));
    }

    #[test]
    fn several_values_on_one_line() {
        assert_eq!(
            events("x:1|c:2|c"),
            [
                ("x".to_string(), Value::Counter(1.0)),
                ("x".into(), Value::Counter(2.0))
            ]
        );
        let ev = events("lat:1:2:3|h|#route:a");
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[2].1, Value::Observe(3.0));
        assert_eq!(
            parse_line("x:1:2|c").errors,
            ["invalid_extended_aggregate_type"]
        );
    }

    #[test]
    fn dogstatsd_tags_become_labels() {
        let p = parse_line("orders:1|c|@1.0|#shop:eu-1,#env:prod,tier.name:gold");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let labels = &p.events[0].labels;
        assert_eq!(labels["shop"], "eu-1");
        assert_eq!(labels["env"], "prod");
        assert_eq!(labels["tier_name"], "gold", "tag names are escaped");
        let p = parse_line("orders:1|c|#bad,ok:1");
        assert_eq!(p.errors, ["malformed_tag"]);
        assert_eq!(p.events[0].labels.len(), 1);
        let p = parse_line("orders:1|c|#a:b|c:abc|T1656581400");
        assert_eq!(p.events[0].labels["container_id"], "abc");
    }

    #[test]
    fn bad_lines_are_errors_not_events() {
        for (line, reason) in [
            ("nocolon", "malformed_line"),
            (":1|c", "malformed_line"),
            ("x:1", "not_enough_parts_after_colon"),
            ("x:abc|c", "malformed_value"),
            ("x:|c", "malformed_value"),
            ("x:1|c||", "malformed_component"),
            ("x:1|c|!", "invalid_sample_factor"),
            ("x:1|s", "illegal_event"),
            ("x:1|q", "illegal_event"),
            ("x:1|c|T", "malformed_timestamp"),
            ("x:1|c|cx", "malformed_container_id"),
        ] {
            let p = parse_line(line);
            assert!(p.events.is_empty(), "{line}: {:?}", p.events);
            assert_eq!(p.errors, [reason], "{line}");
        }
        assert_eq!(parse_line(""), Parsed::default());
    }

    #[test]
    fn packets_hold_several_lines() {
        let p = parse_packet(
            "gunicorn.requests:1|c|@1.0\ngunicorn.request.status.200:1|c|@1.0\r\n\ngunicorn.request.duration:3.2|ms\n",
        );
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.samples, 3);
        assert!(p.errors.is_empty());
        assert_eq!(p.events[1].name, "gunicorn.request.status.200");
    }
}
