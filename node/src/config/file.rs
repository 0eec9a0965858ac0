//! `rackd up --config rackd.toml`: a node's flags kept in a file, for systemd units and
//! configuration management. The keys are `up`'s long flag names (`data-dir` or `data_dir`),
//! the values what the flag takes: a string or number, `true` for a switch (`false` leaves
//! it off), an array for a repeatable flag. A flag also given on the command line wins over
//! the file; a key that is not a flag of `up` is refused, naming the file and the key.
//!
//! ```toml
//! data-dir = "/var/lib/rackd"
//! api = "10.0.0.11:7080"
//! peer = "10.0.0.11:7081"
//! location = "dc1"
//! dhcp-interface = "eth1"
//! ```
//!
//! Bottom layer (part of `config`): the file becomes flags before clap parses the command
//! line, so the flags' own checks and defaults apply to it alike.

use std::collections::BTreeSet;
use std::ffi::OsString;

/// The flags a config file's `text` stands for, skipping those in `given` (flags the command
/// line sets; without leading dashes). `up` is the `up` command, whose flags are the keys.
pub fn flags(
    text: &str,
    up: &clap::Command,
    given: &BTreeSet<String>,
) -> Result<Vec<String>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        let arg = up
            .get_arguments()
            .find(|a| a.get_long() == Some(name.as_str()) && !a.is_hide_set())
            .ok_or_else(|| {
                format!("{key:?} is not a flag of `rackd up` (rackd up --help lists them)")
            })?;
        if name == "config" {
            return Err("a config file cannot name another one".into());
        }
        if given.contains(&name) {
            continue;
        }
        let switch = matches!(
            arg.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
        );
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => Err(format!("{key}: {other} is not a value for --{name}")),
            }
        };
        match (&value, switch) {
            (toml::Value::Boolean(true), true) => out.push(format!("--{name}")),
            (toml::Value::Boolean(false), true) => {}
            (_, true) => return Err(format!("{key}: --{name} is a switch: true or false")),
            (toml::Value::Array(items), false) => {
                for v in items {
                    out.push(format!("--{name}"));
                    out.push(scalar(v)?);
                }
            }
            (v, false) => {
                out.push(format!("--{name}"));
                out.push(scalar(v)?);
            }
        }
    }
    Ok(out)
}

/// `argv` with the flags of the config file it names (`up --config FILE`, `join … --config
/// FILE`, or `RACKD_CONFIG` for those two) spliced in after the subcommand. Other commands
/// pass through unchanged.
pub fn expand(argv: Vec<OsString>, root: &clap::Command) -> Result<Vec<OsString>, String> {
    let words: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(at) = words
        .iter()
        .position(|w| w == "up" || w == "join")
        .filter(|&i| words[1..i].iter().all(|w| w.starts_with('-')))
    else {
        return Ok(argv);
    };
    let mut path = None;
    let mut given = BTreeSet::new();
    for (i, w) in words.iter().enumerate().skip(at + 1) {
        let Some(flag) = w.strip_prefix("--") else {
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "config" {
            path = inline.or_else(|| words.get(i + 1).cloned());
        }
        given.insert(name.to_string());
    }
    let path = match path.or_else(|| std::env::var("RACKD_CONFIG").ok()) {
        Some(p) if !p.is_empty() => p,
        _ => return Ok(argv),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    let sub = root.find_subcommand(&words[at]).ok_or("no up command")?;
    let mut sub = sub.clone();
    sub.build();
    let extra = flags(&text, &sub, &given).map_err(|e| format!("{path}: {e}"))?;
    let mut out: Vec<OsString> = argv[..=at].to_vec();
    out.extend(extra.into_iter().map(OsString::from));
    out.extend(argv[at + 1..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn up() -> Command {
        Command::new("up")
            .arg(Arg::new("data_dir").long("data-dir"))
            .arg(Arg::new("api").long("api"))
            .arg(
                Arg::new("learner")
                    .long("learner")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("dns").long("dns").action(ArgAction::Append))
            .arg(Arg::new("secs").long("task-lease-secs"))
            .arg(Arg::new("config").long("config"))
    }

    #[test]
    fn keys_become_flags_and_the_command_line_wins() {
        let text = r#"
            data_dir = "/var/lib/rackd"
            api = "10.0.0.1:7080"
            learner = true
            dns = ["10.0.0.2", "10.0.0.3"]
            task-lease-secs = 30
        "#;
        let f = flags(text, &up(), &BTreeSet::new()).unwrap();
        let want = [
            "--api",
            "10.0.0.1:7080",
            "--data-dir",
            "/var/lib/rackd",
            "--dns",
            "10.0.0.2",
            "--dns",
            "10.0.0.3",
            "--learner",
            "--task-lease-secs",
            "30",
        ];
        assert_eq!(f, want);
        let given = BTreeSet::from(["api".to_string()]);
        let f = flags(text, &up(), &given).unwrap();
        assert!(!f.contains(&"--api".to_string()), "{f:?}");
        assert!(flags("learner = false", &up(), &BTreeSet::new())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_by_name() {
        for (text, says) in [
            ("colour = \"red\"", "\"colour\" is not a flag"),
            ("learner = \"yes\"", "is a switch"),
            ("api = { host = \"x\" }", "is not a value for --api"),
            ("config = \"other.toml\"", "cannot name another"),
            ("api = ", "TOML parse error"),
        ] {
            let e = flags(text, &up(), &BTreeSet::new()).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
