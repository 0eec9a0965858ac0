//! Every subcommand and every flag of the CLI says what it is for: the whole command tree,
//! as clap builds it from the same definitions the binary parses with, is walked, so a
//! command or flag added without help fails here.

use clap::CommandFactory;

/// Every (command path, what lacks help) in the tree under `cmd`.
fn missing(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if a.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        if a.get_help().is_none() && a.get_long_help().is_none() {
            out.push(format!("{path}: argument {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let p = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            out.push(format!("{p}: no description"));
        }
        missing(sub, &p, out);
    }
}

#[test]
fn every_subcommand_and_flag_has_help() {
    let cmd = super::Cli::command();
    let mut out = Vec::new();
    missing(&cmd, "rackd", &mut out);
    assert!(
        out.is_empty(),
        "{} without help:\n{}",
        out.len(),
        out.join("\n")
    );
}
