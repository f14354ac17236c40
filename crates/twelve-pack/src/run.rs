//! Running build tools: finding them on PATH, capturing their output, and turning a failure
//! into an error that shows the command and the end of what it printed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::PackError;

/// How many lines of a failing command's output an error shows.
const TAIL_LINES: usize = 20;
/// How much output is kept in memory while a command runs.
const KEEP_BYTES: usize = 256 * 1024;

/// The executable `tool` on PATH, or an error naming the Debian package that provides it.
pub(crate) fn require_tool(tool: &str, package: &str) -> Result<PathBuf, PackError> {
    which(tool).ok_or_else(|| PackError::ToolMissing {
        tool: tool.to_string(),
        package: package.to_string(),
        why: format!("`{tool}` was not found on PATH"),
    })
}

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if tool.contains('/') {
        return Some(PathBuf::from(tool)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Runs `cmd` with stdin closed and stdout+stderr captured together. Returns the output on
/// success; a failure (or a missing program) is an error carrying the tail of the output.
pub(crate) fn run(cmd: &mut Command, shown: &str, package: &str) -> Result<String, PackError> {
    let (mut reader, writer) = std::io::pipe().map_err(|e| PackError::io("creating a pipe", e))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| PackError::io("creating a pipe", e))?;
    cmd.stdin(Stdio::null()).stdout(writer2).stderr(writer);
    let spawned = cmd.spawn();
    // Drop the command's copies of the write end so reading ends when the child exits.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let program = cmd.get_program().to_string_lossy().into_owned();
            return Err(PackError::ToolMissing {
                why: format!("cannot run `{program}`: {e}"),
                tool: program,
                package: package.to_string(),
            });
        }
        Err(e) => return Err(PackError::io(format!("cannot run `{shown}`"), e)),
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * KEEP_BYTES {
                    kept.drain(..kept.len() - KEEP_BYTES);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let status = child
        .wait()
        .map_err(|e| PackError::io(format!("waiting for `{shown}`"), e))?;
    let output = String::from_utf8_lossy(&kept).into_owned();
    if status.success() {
        Ok(output)
    } else {
        Err(PackError::StepFailed {
            command: shown.to_string(),
            status: status.to_string(),
            tail: tail(&output, TAIL_LINES),
        })
    }
}

/// Runs `cmd` with stdin closed and stdout+stderr written to the file `log` (created or
/// truncated), for builds whose whole output is kept; returns how it exited. A missing
/// program is [`PackError::ToolMissing`].
pub(crate) fn run_logged(
    cmd: &mut Command,
    shown: &str,
    package: &str,
    log: &Path,
) -> Result<std::process::ExitStatus, PackError> {
    let file = std::fs::File::create(log)
        .map_err(|e| PackError::io(format!("creating {}", log.display()), e))?;
    let file2 = file
        .try_clone()
        .map_err(|e| PackError::io(format!("creating {}", log.display()), e))?;
    cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
    let result = cmd.status();
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    match result {
        Ok(status) => Ok(status),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let program = cmd.get_program().to_string_lossy().into_owned();
            Err(PackError::ToolMissing {
                why: format!("cannot run `{program}`: {e}"),
                tool: program,
                package: package.to_string(),
            })
        }
        Err(e) => Err(PackError::io(format!("cannot run `{shown}`"), e)),
    }
}

/// The last `n` non-empty lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first line a `--version`-style command prints, or None when it cannot run.
pub(crate) fn version_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let err = require_tool("twelve-no-such-tool", "golang-go").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("apt-get install -y golang-go"), "{msg}");
        assert!(msg.contains("twelve-no-such-tool"), "{msg}");
    }

    #[test]
    fn unrunnable_program_is_a_missing_tool() {
        let err = run(
            &mut Command::new("/nonexistent/twelve-tool"),
            "twelve-tool",
            "npm",
        )
        .unwrap_err();
        assert!(matches!(err, PackError::ToolMissing { ref package, .. } if package == "npm"));
    }

    #[test]
    fn failure_keeps_the_last_lines() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "for i in $(seq 1 50); do echo line$i; done; echo oops >&2; exit 3",
        ]);
        let err = run(&mut cmd, "sh -c loop", "dash").unwrap_err();
        let PackError::StepFailed { command, tail, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(command, "sh -c loop");
        assert_eq!(tail.lines().count(), 20);
        assert!(tail.ends_with("oops"));
        assert!(!tail.contains("line30\n"));
        assert!(err.to_string().contains("exit status: 3"), "{err}");
    }

    #[test]
    fn success_returns_output() {
        let out = run(Command::new("sh").args(["-c", "echo hi"]), "sh", "dash").unwrap();
        assert_eq!(out.trim(), "hi");
    }
}
