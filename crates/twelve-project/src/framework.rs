//! The six frameworks and what their rockcraft/charmcraft extensions bring: service name,
//! prefixes, rock paths, ports, and the extension's config options, relations and actions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::charmcraft::{ActionDef, ConfigOption, OptionType, Relation};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framework {
    Flask,
    Django,
    #[serde(rename = "fastapi")]
    FastApi,
    Go,
    #[serde(rename = "expressjs")]
    ExpressJs,
    SpringBoot,
}

pub const ALL_FRAMEWORKS: [Framework; 6] = [
    Framework::Flask,
    Framework::Django,
    Framework::FastApi,
    Framework::Go,
    Framework::ExpressJs,
    Framework::SpringBoot,
];

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Framework {
    /// paas-charm's framework name, also the Pebble service name of the app.
    pub fn name(self) -> &'static str {
        match self {
            Framework::Flask => "flask",
            Framework::Django => "django",
            Framework::FastApi => "fastapi",
            Framework::Go => "go",
            Framework::ExpressJs => "expressjs",
            Framework::SpringBoot => "spring-boot",
        }
    }

    /// The rockcraft/charmcraft extension and `init` profile name.
    pub fn extension(self) -> &'static str {
        match self {
            Framework::Flask => "flask-framework",
            Framework::Django => "django-framework",
            Framework::FastApi => "fastapi-framework",
            Framework::Go => "go-framework",
            Framework::ExpressJs => "expressjs-framework",
            Framework::SpringBoot => "spring-boot-framework",
        }
    }

    pub fn from_extension(ext: &str) -> Option<Framework> {
        ALL_FRAMEWORKS.into_iter().find(|f| f.extension() == ext)
    }

    pub fn service_name(self) -> &'static str {
        self.name()
    }

    /// Prefix of user options and built-ins (`configuration_prefix`).
    pub fn prefix(self) -> &'static str {
        match self {
            Framework::Flask => "FLASK_",
            Framework::Django => "DJANGO_",
            _ => "APP_",
        }
    }

    /// Prefix of framework-config variables (`framework_config_prefix`), paas-charm 1.x.
    pub fn framework_config_prefix(self) -> &'static str {
        match self {
            Framework::Flask => "FLASK_",
            Framework::Django => "DJANGO_",
            Framework::Go => "APP_",
            _ => "",
        }
    }

    /// The app directory inside the rock.
    pub fn app_dir(self) -> &'static str {
        match self {
            Framework::Flask => "/flask/app",
            Framework::Django => "/django/app",
            _ => "/app",
        }
    }

    /// Gunicorn frameworks run behind gunicorn with a config file and webserver-* options.
    /// paas-charm configures this framework's server for `framework_logging_format:
    /// json` (gunicorn for Flask and Django, uvicorn for FastAPI).
    pub fn supports_json_logs(self) -> bool {
        matches!(
            self,
            Framework::Flask | Framework::Django | Framework::FastApi
        )
    }

    pub fn is_gunicorn(self) -> bool {
        matches!(self, Framework::Flask | Framework::Django)
    }

    pub fn is_python(self) -> bool {
        matches!(
            self,
            Framework::Flask | Framework::Django | Framework::FastApi
        )
    }

    /// The app port when nothing configures it.
    pub fn default_port(self) -> u16 {
        match self {
            Framework::Flask | Framework::Django => 8000,
            _ => 8080,
        }
    }

    /// Default metrics port and path (paas-charm 1.x; Flask/Django via statsd_exporter).
    pub fn default_metrics(self) -> (u16, &'static str) {
        match self {
            Framework::Flask | Framework::Django => (9102, "/metrics"),
            Framework::SpringBoot => (8080, "/actuator/prometheus"),
            _ => (8080, "/metrics"),
        }
    }

    /// The app port when nothing configures it, under paas-charm main: FastAPI moves to 8000.
    pub fn main_default_port(self) -> u16 {
        match self {
            Framework::Flask | Framework::Django | Framework::FastApi => 8000,
            _ => 8080,
        }
    }

    /// Default metrics port and path under paas-charm main (each framework charm's
    /// `metrics_endpoint` defaults): FastAPI on its app port 8000, Express on 9464.
    pub fn main_default_metrics(self) -> (u16, &'static str) {
        match self {
            Framework::Flask | Framework::Django => (9102, "/metrics"),
            Framework::FastApi => (8000, "/metrics"),
            Framework::Go => (8080, "/metrics"),
            Framework::ExpressJs => (9464, "/metrics"),
            Framework::SpringBoot => (8080, "/actuator/prometheus"),
        }
    }

    /// The 1.x option that sets the app secret key: `flask-secret-key`, `django-secret-key`,
    /// else `app-secret-key`. paas-charm main spells it `app-secret-key` everywhere, which
    /// Flask and Django accept as well.
    pub fn secret_key_option(self) -> &'static str {
        match self {
            Framework::Flask => "flask-secret-key",
            Framework::Django => "django-secret-key",
            _ => "app-secret-key",
        }
    }

    /// paas-charm's peer-databag key for the generated secret key.
    pub fn generated_secret_key_name(self) -> String {
        format!("{}_secret_key", self.name())
    }

    /// Config options the charmcraft extension adds (v1 extension).
    pub fn extension_options(self) -> Vec<(&'static str, ConfigOption)> {
        use OptionType::*;
        let opt =
            |t: OptionType, default: Option<serde_json::Value>, description: &str| ConfigOption {
                type_: t,
                default,
                description: Some(description.to_string()),
                optional: None,
                location: None,
            };
        let webserver = || {
            vec![
                ("webserver-keepalive", opt(Int, None, "Time in seconds for webserver to wait for requests on a Keep-Alive connection.")),
                ("webserver-threads", opt(Int, None, "Run each webserver worker with the specified number of threads.")),
                ("webserver-timeout", opt(Int, None, "Time in seconds to kill and restart silent webserver workers.")),
                ("webserver-workers", opt(Int, None, "The number of webserver worker processes for handling requests.")),
                ("webserver-worker-class", opt(String, None, "The webserver worker process class for handling requests. Can be either 'gevent' or 'sync'.")),
            ]
        };
        let app_secret = || {
            vec![
                ("app-secret-key", opt(String, None, "Long secret you can use for sessions, csrf or any other thing where you need a random secret shared by all units")),
                ("app-secret-key-id", opt(Secret, None, "This configuration is similar to `app-secret-key`, but instead accepts a Juju user secret ID. The secret should contain a single key, \"value\", which maps to the actual secret key.")),
            ]
        };
        let num = |n: i64| Some(serde_json::Value::from(n));
        let text = |s: &str| Some(serde_json::Value::from(s));
        let mut options = match self {
            Framework::Flask => vec![
                ("flask-application-root", opt(String, None, "Path in which the application / web server is mounted.")),
                ("flask-debug", opt(Boolean, None, "Whether Flask debug mode is enabled.")),
                ("flask-env", opt(String, None, "What environment the Flask app is running in, by default it's 'production'.")),
                ("flask-permanent-session-lifetime", opt(Int, None, "Time in seconds for the cookie to expire in the Flask application permanent sessions.")),
                ("flask-preferred-url-scheme", opt(String, text("HTTPS"), "Scheme for generating external URLs when not in a request context in the Flask application.")),
                ("flask-secret-key", opt(String, None, "The secret key used for securely signing the session cookie and for any other security related needs by your Flask application.")),
                ("flask-secret-key-id", opt(Secret, None, "This configuration is similar to `flask-secret-key`, but instead accepts a Juju user secret ID.")),
                ("flask-session-cookie-secure", opt(Boolean, None, "Set the secure attribute in the Flask application cookies.")),
            ],
            Framework::Django => vec![
                ("django-debug", opt(Boolean, Some(false.into()), "Whether Django debug mode is enabled.")),
                ("django-secret-key", opt(String, None, "The secret key used for securely signing the session cookie and for any other security related needs by your Django application.")),
                ("django-secret-key-id", opt(Secret, None, "This configuration is similar to `django-secret-key`, but instead accepts a Juju user secret ID.")),
                ("django-allowed-hosts", opt(String, None, "A comma-separated list of host/domain names that this Django site can serve.")),
            ],
            Framework::FastApi => {
                let mut o = vec![
                    ("webserver-workers", opt(Int, num(1), "Number of workers for uvicorn. Sets env variable WEB_CONCURRENCY.")),
                    ("webserver-port", opt(Int, num(8080), "Bind to a socket with this port. Default: 8000. Sets env variable UVICORN_PORT.")),
                    ("webserver-log-level", opt(String, text("info"), "Set the log level. Options: 'critical', 'error', 'warning', 'info', 'debug', 'trace'. Sets the env variable UVICORN_LOG_LEVEL.")),
                    ("metrics-port", opt(Int, num(8080), "Port where the prometheus metrics will be scraped.")),
                    ("metrics-path", opt(String, text("/metrics"), "Path where the prometheus metrics will be scraped.")),
                ];
                o.extend(app_secret());
                o
            }
            Framework::Go | Framework::ExpressJs => {
                let mut o = vec![
                    ("app-port", opt(Int, num(8080), "Default port where the application will listen on.")),
                    ("metrics-port", opt(Int, num(8080), "Port where the prometheus metrics will be scraped.")),
                    ("metrics-path", opt(String, text("/metrics"), "Path where the prometheus metrics will be scraped.")),
                ];
                o.extend(app_secret());
                o
            }
            Framework::SpringBoot => {
                let mut o = vec![
                    ("app-port", opt(Int, num(8080), "Default port where the application will listen on.")),
                    ("metrics-port", opt(Int, num(8080), "Port where the prometheus metrics will be scraped.")),
                    ("metrics-path", opt(String, text("/actuator/prometheus"), "Path where the prometheus metrics will be scraped.")),
                    ("app-profiles", opt(String, None, "Configure Spring Boot application profiles.")),
                ];
                o.extend(app_secret());
                o
            }
        };
        if self.is_gunicorn() {
            // paas-charm main (unreleased, breaking) names the Flask and Django secret key
            // options `app-secret-key(-id)` too; the 1.x names above stay accepted.
            options.extend(app_secret());
            options.extend(webserver());
        }
        options
    }

    /// Relations the extension always declares (beyond the project's own `requires`).
    pub fn extension_relations(self) -> Vec<(&'static str, Relation)> {
        let rel = |interface: &str| Relation {
            interface: interface.to_string(),
            optional: Some(true),
            limit: Some(1),
            location: None,
        };
        vec![
            ("ingress", rel("ingress")),
            ("logging", rel("loki_push_api")),
        ]
    }

    /// Actions the extension declares.
    pub fn extension_actions(self) -> Vec<(&'static str, ActionDef)> {
        let mut actions = vec![(
            "rotate-secret-key",
            ActionDef {
                description: Some("Rotate the secret key. Users will be forced to log in again. This might be useful if a security breach occurs.".into()),
                params: Default::default(),
                required: vec![],
                additional_properties: None,
            },
        )];
        if self == Framework::Django {
            let param = |d: &str| crate::charmcraft::ActionParam {
                type_: Some("string".into()),
                description: Some(d.into()),
                default: None,
                enum_: None,
            };
            actions.push((
                "create-superuser",
                ActionDef {
                    description: Some("Create a new Django superuser account.".into()),
                    params: [
                        ("username".to_string(), param("Superuser username.")),
                        ("email".to_string(), param("Superuser email.")),
                    ]
                    .into_iter()
                    .collect(),
                    required: vec!["username".into(), "email".into()],
                    additional_properties: None,
                },
            ));
        }
        actions
    }

    /// The rock's default start command (rockcraft extension), before `services:` merges.
    /// `entry` is the discovered WSGI/ASGI entry point or Go binary name.
    pub fn default_command(self, entry: &str) -> String {
        match self {
            Framework::Flask => {
                format!("/bin/python3 -m gunicorn -c /flask/gunicorn.conf.py '{entry}' -k [ sync ]")
            }
            Framework::Django => format!(
                "/bin/python3 -m gunicorn -c /django/gunicorn.conf.py '{entry}' -k [ sync ]"
            ),
            Framework::FastApi => format!("/bin/python3 -m uvicorn {entry}"),
            Framework::Go => entry.to_string(),
            Framework::ExpressJs => "npm start".to_string(),
            Framework::SpringBoot => "bash -c \"java -jar *.jar\"".to_string(),
        }
    }
}
