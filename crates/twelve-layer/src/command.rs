//! Service commands: shell-like words, exec'd directly (never through a shell), with an
//! optional trailing `[ default args ]` group that `--args` may replace.

use std::fmt;

/// A parsed service command: `base` always runs; `default_args` run unless replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub base: Vec<String>,
    pub default_args: Vec<String>,
    /// Whether the command had a `[ ... ]` group (even an empty one).
    pub has_args_group: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("cannot parse command {0:?}: unbalanced quotes")]
    Quotes(String),
    #[error("cannot parse command {0:?}: empty command")]
    Empty(String),
    #[error("cannot parse command {0:?}: '[ ... ]' cannot be the first argument")]
    GroupFirst(String),
    #[error("cannot parse command {0:?}: cannot nest '[ ... ]' groups")]
    Nested(String),
    #[error("cannot parse command {0:?}: cannot have any arguments after '[ ... ]' group")]
    AfterGroup(String),
    #[error("cannot parse command {0:?}: unexpected ']'")]
    StrayClose(String),
    #[error("cannot parse command {0:?}: missing ']'")]
    Unclosed(String),
}

impl Command {
    pub fn parse(command: &str) -> Result<Command, CommandError> {
        let words = shlex::split(command).ok_or_else(|| CommandError::Quotes(command.into()))?;
        if words.is_empty() {
            return Err(CommandError::Empty(command.into()));
        }
        let mut base = Vec::new();
        let mut args = Vec::new();
        // 0: base words, 1: inside the group, 2: after the group.
        let mut state = 0;
        for word in words {
            match (state, word.as_str()) {
                (0, "[") if base.is_empty() => {
                    return Err(CommandError::GroupFirst(command.into()))
                }
                (0, "[") => state = 1,
                (1, "[") => return Err(CommandError::Nested(command.into())),
                (1, "]") => state = 2,
                (2, _) => return Err(CommandError::AfterGroup(command.into())),
                (_, "]") => return Err(CommandError::StrayClose(command.into())),
                (0, _) => base.push(word),
                (_, _) => args.push(word),
            }
        }
        if state == 1 {
            return Err(CommandError::Unclosed(command.into()));
        }
        Ok(Command {
            base,
            default_args: args,
            has_args_group: state == 2,
        })
    }

    /// The argv that runs: `base` then the default args.
    pub fn argv(&self) -> Vec<String> {
        self.base
            .iter()
            .chain(&self.default_args)
            .cloned()
            .collect()
    }

    /// The argv with `args` in place of the default args.
    pub fn argv_with(&self, args: &[String]) -> Vec<String> {
        self.base.iter().chain(args).cloned().collect()
    }
}

/// Quotes a word so that `Command::parse` reads it back unchanged.
pub fn quote_word(word: &str) -> String {
    match shlex::try_quote(word) {
        Ok(q) => q.into_owned(),
        // Only a NUL byte makes quoting fail; nothing that reaches here carries one.
        Err(_) => format!("'{}'", word.replace('\0', "")),
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base: Vec<String> = self.base.iter().map(|w| quote_word(w)).collect();
        f.write_str(&base.join(" "))?;
        if self.has_args_group {
            f.write_str(" [")?;
            for a in &self.default_args {
                write!(f, " {}", quote_word(a))?;
            }
            f.write_str(" ]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_like_a_shell_without_running_one() {
        let c = Command::parse(r#"python3 -c 'print("a b")' $HOME"#).unwrap();
        assert_eq!(c.base, words(&["python3", "-c", "print(\"a b\")", "$HOME"]));
        assert!(c.default_args.is_empty());
    }

    #[test]
    fn trailing_group_holds_default_args() {
        let c = Command::parse("/bin/python3 -m gunicorn -c conf.py app:app -k [ sync ]").unwrap();
        assert_eq!(c.default_args, words(&["sync"]));
        assert_eq!(c.argv().last().unwrap(), "sync");
        assert_eq!(c.argv_with(&words(&["gevent"])).last().unwrap(), "gevent");
        assert_eq!(
            c.to_string(),
            "/bin/python3 -m gunicorn -c conf.py app:app -k [ sync ]"
        );
    }

    #[test]
    fn group_rules_follow_pebble() {
        assert!(matches!(
            Command::parse("[ a ]"),
            Err(CommandError::GroupFirst(_))
        ));
        assert!(matches!(
            Command::parse("a [ b [ c ] ]"),
            Err(CommandError::Nested(_))
        ));
        assert!(matches!(
            Command::parse("a [ b ] c"),
            Err(CommandError::AfterGroup(_))
        ));
        assert!(matches!(
            Command::parse("a ] b"),
            Err(CommandError::StrayClose(_))
        ));
        assert!(matches!(
            Command::parse("a [ b"),
            Err(CommandError::Unclosed(_))
        ));
        assert!(matches!(
            Command::parse("a 'b"),
            Err(CommandError::Quotes(_))
        ));
        assert!(matches!(Command::parse("  "), Err(CommandError::Empty(_))));
    }
}
