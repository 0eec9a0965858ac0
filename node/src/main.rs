//! The `rackd` binary: parse the command line, then run a node or a client command.

use clap::Parser;
use rackd::cli::{Cli, Cmd};

fn main() {
    // `up --config FILE`: the file's flags join the command line before it is parsed.
    let argv = {
        use clap::CommandFactory;
        match rackd::config::file::expand(std::env::args_os().collect(), &Cli::command()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("rackd: config: {e}");
                std::process::exit(2);
            }
        }
    };
    let cli = Cli::parse_from(argv);
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rackd: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::ApplianceInit => rackd_installer::init::run(),
        Cmd::Completion { shell } => {
            rackd::out!("{}", rackd::cli::complete::script(shell).trim_end());
            return Ok(());
        }
        Cmd::Complete { words } => {
            use clap::CommandFactory;
            for c in rackd::cli::complete::candidates(&Cli::command(), &words) {
                rackd::out!("{c}");
            }
            return Ok(());
        }
        Cmd::Image(cmd) => return rackd::cli::image::run(cmd),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Up(args) => rt.block_on(rackd::cli::commands::up(args, None)),
        Cmd::Join { url, up } => rt.block_on(rackd::cli::commands::up(up, Some(url))),
        Cmd::Login { url, ca_pin } => rt.block_on(rackd::cli::login::run(
            &url,
            cli.api_token,
            cli.ca_file.as_deref(),
            ca_pin.as_deref(),
        )),
        other => rt.block_on(rackd::cli::commands::client(
            cli.server,
            cli.api_token,
            cli.ca_file.as_deref(),
            cli.output,
            other,
        )),
    }
}
