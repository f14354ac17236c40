//! Every verb of the CLI is defined here, in one place; `--help` and docs/cli.md derive
//! from these definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "twelve",
    version,
    about = "Deploy and operate 12-factor web apps (Flask, Django, FastAPI, Go, Express, Spring Boot)",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    #[value(name = "flask-framework")]
    Flask,
    #[value(name = "django-framework")]
    Django,
    #[value(name = "fastapi-framework")]
    FastApi,
    #[value(name = "go-framework")]
    Go,
    #[value(name = "expressjs-framework")]
    ExpressJs,
    #[value(name = "spring-boot-framework")]
    SpringBoot,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Flask => "flask-framework",
            Profile::Django => "django-framework",
            Profile::FastApi => "fastapi-framework",
            Profile::Go => "go-framework",
            Profile::ExpressJs => "expressjs-framework",
            Profile::SpringBoot => "spring-boot-framework",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a runnable project for a framework: rockcraft.yaml, charm/charmcraft.yaml,
    /// the dependency file and a hello-world app.
    Init {
        /// The framework profile.
        #[arg(long, value_enum)]
        profile: Profile,
        /// The project (and app) name; default: the directory's name.
        #[arg(long)]
        name: Option<String>,
        /// Where to create the project (created if missing); default: the current directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show the plan a unit of the app would run: services, commands, environment, checks,
    /// migration, actions, and why the status is what it is. Pure: no controller, network
    /// or processes.
    Render {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A scenario file: app name, units, config, secrets, integration data (docs/render.md).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// The unit to plan (default: the scenario's `unit`, else 0).
        #[arg(long)]
        unit: Option<u32>,
        /// Output format.
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
        /// Show secret values (passwords, keys, secret contents) instead of a marker.
        #[arg(long)]
        reveal: bool,
        /// The directory holding charmcraft.yaml (default: DIR/charm, else DIR).
        #[arg(long)]
        charm_dir: Option<PathBuf>,
    },
    /// The Pebble-compatible unit supervisor and its client commands.
    Pebble(twelve_pebble::cli::PebbleArgs),
}
