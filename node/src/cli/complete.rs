//! Shell completion: `rackd completion bash|zsh|fish` prints a small script that asks the
//! binary itself (`rackd __complete WORDS…`) what may come next. One engine, [`candidates`],
//! walks the same clap command tree the binary parses with, so completion never lags behind
//! the commands: subcommands, flags (with the global ones), and the values of flags and
//! arguments that have a fixed set (states of `--output`, power actions, boot devices, ...).
//!
//! Layer: part of `cli`; pure over `clap::Command` (no client, no I/O besides printing).

use clap::{Arg, Command, ValueEnum};

/// A parser that accepts exactly `names` (each `T`'s name) and lists them to `--help` and to
/// completion, for the API's enums (which know nothing of clap).
pub fn one_of<T>(names: &[&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names.to_vec()).try_map(|s| s.parse::<T>())
}

/// The shells a script is printed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What may follow `words` (the command line after `rackd`; the last word is the one being
/// completed, possibly empty), starting with that last word.
pub fn candidates(root: &Command, words: &[String]) -> Vec<String> {
    let mut root = root.clone();
    root.build();
    let (partial, done) = match words.split_last() {
        Some((p, d)) => (p.as_str(), d),
        None => ("", &[][..]),
    };
    let mut cmd = &root;
    let mut pending: Option<&Arg> = None; // a flag whose value comes next
    let mut positionals = 0usize;
    for w in done {
        if pending.take().is_some() {
            continue;
        }
        if let Some(flag) = w.strip_prefix("--") {
            if flag.contains('=') {
                continue;
            }
            pending = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .filter(|a| takes_value(a));
            continue;
        }
        if let Some(short) = w.strip_prefix('-').and_then(|s| s.chars().next()) {
            pending = cmd
                .get_arguments()
                .find(|a| a.get_short() == Some(short))
                .filter(|a| takes_value(a) && w.len() == 2);
            continue;
        }
        match cmd
            .get_subcommands()
            .find(|s| s.get_name() == w || s.get_all_aliases().any(|a| a == w))
        {
            Some(sub) => {
                cmd = sub;
                positionals = 0;
            }
            None => positionals += 1,
        }
    }
    let mut out: Vec<String> = Vec::new();
    if let Some(flag) = pending {
        out.extend(values(flag));
    } else if partial.starts_with('-') {
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(l) = a.get_long() {
                out.push(format!("--{l}"));
            }
            if let Some(s) = a.get_short() {
                out.push(format!("-{s}"));
            }
        }
        out.push("--help".into());
    } else {
        out.extend(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| s.get_name().to_string()),
        );
        if let Some(arg) = cmd.get_positionals().nth(positionals) {
            out.extend(values(arg));
        }
    }
    out.retain(|c| c.starts_with(partial));
    out.sort();
    out.dedup();
    out
}

fn takes_value(a: &Arg) -> bool {
    a.get_num_args().is_none_or(|n| n.takes_values())
        && !matches!(
            a.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
        )
}

fn values(a: &Arg) -> Vec<String> {
    a.get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect()
}

/// The script that hooks [`candidates`] into `shell`.
pub fn script(shell: Shell) -> &'static str {
    match shell {
        Shell::Bash => {
            r#"# rackd completion for bash: source <(rackd completion bash)
_rackd() {
    local IFS=$'\n'
    COMPREPLY=($(rackd __complete -- "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _rackd rackd
"#
        }
        Shell::Zsh => {
            r#"#compdef rackd
# rackd completion for zsh: rackd completion zsh > "${fpath[1]}/_rackd"
_rackd() {
    local -a c
    c=("${(@f)$(rackd __complete -- "${(@)words[2,$CURRENT]}" 2>/dev/null)}")
    compadd -a c
}
compdef _rackd rackd
"#
        }
        Shell::Fish => {
            r#"# rackd completion for fish: rackd completion fish > ~/.config/fish/completions/rackd.fish
complete -c rackd -f -a '(rackd __complete -- (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)'
"#
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn complete(line: &str) -> Vec<String> {
        let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if line.ends_with(' ') || line.is_empty() {
            words.push(String::new());
        }
        candidates(&super::super::Cli::command(), &words)
    }

    #[test]
    fn subcommands_flags_and_fixed_values_complete_from_the_command_tree() {
        let top = complete("");
        for c in ["machines", "webhooks", "appliance", "completion", "status"] {
            assert!(top.contains(&c.to_string()), "{c} in {top:?}");
        }
        assert!(!top
            .iter()
            .any(|c| c.starts_with("__") || c == "appliance-init"));
        assert_eq!(complete("mach"), ["machines"]);
        let m = complete("machines ");
        assert!(m.contains(&"power".to_string()) && m.contains(&"update".to_string()));
        // Flags: the command's and the global ones.
        let f = complete("machines update web1 --bmc");
        assert!(f.contains(&"--bmc-address".to_string()), "{f:?}");
        assert!(complete("machines list --").contains(&"--server".to_string()));
        // Fixed values: of a flag, and of a positional argument.
        assert_eq!(complete("-o "), ["json", "table"]);
        assert_eq!(complete("machines list -o j"), ["json"]);
        let p = complete("machines power web1 ");
        for a in ["on", "off", "cycle", "reset", "status"] {
            assert!(p.contains(&a.to_string()), "{a} in {p:?}");
        }
        assert_eq!(complete("machines boot-device web1 p"), ["pxe"]);
        assert_eq!(complete("completion "), ["bash", "fish", "zsh"]);
        // A flag's value is not taken for a subcommand.
        assert!(complete("--server machines ").contains(&"completion".to_string()));
        // The old name of `appliance` walks the same tree.
        assert!(complete("image ").contains(&"build".to_string()));
    }

    /// Every visible subcommand of the tree is offered where it belongs.
    #[test]
    fn every_subcommand_is_offered_under_its_parent() {
        fn walk(cmd: &Command, path: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let mut words = path.clone();
                words.push(String::new());
                let got = candidates(&super::super::Cli::command(), &words);
                assert!(
                    got.contains(&sub.get_name().to_string()),
                    "rackd {} {}: {got:?}",
                    path.join(" "),
                    sub.get_name()
                );
                path.push(sub.get_name().to_string());
                walk(sub, path);
                path.pop();
            }
        }
        let mut root = super::super::Cli::command();
        root.build();
        walk(&root, &mut Vec::new());
    }
}
