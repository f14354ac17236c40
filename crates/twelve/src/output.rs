//! How the CLI talks to people: one error, with its cause and a hint, on stderr.

use twelve_project::Diagnostic;

/// Errors of the CLI: a located diagnostic, or any other error with its cause chain.
#[derive(Debug)]
pub enum CliError {
    Diagnostic(Diagnostic),
    Other(anyhow::Error),
}

impl From<Diagnostic> for CliError {
    fn from(d: Diagnostic) -> Self {
        CliError::Diagnostic(d)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Other(e)
    }
}

pub type CliResult<T> = Result<T, CliError>;

pub fn print_error(e: &CliError) {
    match e {
        CliError::Diagnostic(d) => eprintln!("{d}"),
        CliError::Other(e) => {
            let mut text = format!("error: {e}");
            for cause in e.chain().skip(1) {
                text.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{text}");
        }
    }
}

pub fn print_notes(notes: &[Diagnostic]) {
    for n in notes {
        eprintln!("{n}");
    }
}
