//! Errors and notes for people: what is wrong, where (file, line, column), and what to do,
//! rendered in the manner of cargo (`error:`, `-->`, `help:`).

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Note,
}

/// A place in a YAML file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

impl Loc {
    pub fn from_saphyr(l: &serde_saphyr::Location) -> Option<Loc> {
        (l.line() > 0).then(|| Loc {
            line: l.line(),
            column: l.column().max(1),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub file: Option<PathBuf>,
    pub loc: Option<Loc>,
    /// The source line the location points at.
    pub source_line: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            file: None,
            loc: None,
            source_line: None,
            help: None,
        }
    }

    pub fn note(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Note,
            ..Diagnostic::error(message)
        }
    }

    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }

    /// Points at `loc` in `source` (the file's text).
    pub fn at(mut self, loc: Option<Loc>, source: &str) -> Self {
        if let Some(loc) = loc {
            self.source_line = source
                .lines()
                .nth(loc.line.saturating_sub(1) as usize)
                .map(str::to_string);
            self.loc = Some(loc);
        }
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column`, or as much of it as is known.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?.display().to_string();
        Some(match self.loc {
            Some(l) => format!("{file}:{}:{}", l.line, l.column),
            None => file,
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Note => "note",
        };
        write!(f, "{label}: {}", self.message)?;
        if let Some(location) = self.location() {
            write!(f, "\n  --> {location}")?;
        }
        if let (Some(loc), Some(line)) = (self.loc, &self.source_line) {
            let num = loc.line.to_string();
            let pad = " ".repeat(num.len());
            let caret_pad = " ".repeat(loc.column.saturating_sub(1) as usize);
            write!(f, "\n {pad} |\n {num} | {line}\n {pad} | {caret_pad}^")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Parses YAML text into `T`, turning a parse error into a diagnostic that names the
/// file, line and column.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    source: &str,
) -> Result<T, Diagnostic> {
    serde_saphyr::from_str::<T>(source).map_err(|e| yaml_error(file, source, &e))
}

pub fn yaml_error(file: &Path, source: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let loc = e.location().as_ref().and_then(Loc::from_saphyr);
    let message = first_line(&e.without_snippet().to_string());
    Diagnostic::error(format!("invalid {}: {message}", file_name(file)))
        .in_file(file)
        .at(loc, source)
}

fn first_line(s: &str) -> String {
    // saphyr appends " at line X column Y"; the location is shown separately.
    let line = s.lines().next().unwrap_or(s).trim();
    match line.rfind(" at line ") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
}

pub fn file_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string())
}
