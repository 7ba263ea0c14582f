//! `picosandbox`: boot a sandbox and serve it, open a shell in one, or
//! drive a running one from scripts.
//!
//! Exit codes: 0 success, 1 the guest refused the operation, 2 bad usage,
//! 3 the sandbox could not be reached or booted, 4 timeout, 5 a local file
//! error, 6 a demo step failed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use host_sync::cli::{self, Command, EXIT_DEMO_FAILED, EXIT_OK, EXIT_SANDBOX, SHUTDOWN_DEADLINE};
use host_sync::{Accel, Client, Error, GuestLog, Sandbox, SandboxConfig};

/// Boot, drive and share picosandbox guests.
#[derive(Parser)]
#[command(name = "picosandbox", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Boot a sandbox, serve its relay socket, print the socket path; stop on Ctrl-C.
    Run(Boot),
    /// Boot a sandbox and open an interactive shell in it.
    Shell(Boot),
    /// Boot a sandbox, run a short scripted session that checks every step, shut it down.
    Demo(Boot),
    /// One filesystem command against a running sandbox's relay.
    Fs(FsArgs),
}

/// How to boot.
#[derive(Args)]
struct Boot {
    /// The guest ELF [default: $PICOSANDBOX_GUEST, else the one built next to this binary]
    #[arg(long, env = "PICOSANDBOX_GUEST")]
    guest: Option<PathBuf>,
    /// Guest memory in MiB (the guest filesystem gets nearly all of it).
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// CPU acceleration: KVM only where a hardware KVM module is loaded.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Print the guest's log on standard error.
    #[arg(long)]
    log: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Args)]
struct FsArgs {
    /// The relay socket of a running sandbox (printed by `picosandbox run`).
    #[arg(long, env = "PICOSANDBOX_SOCKET")]
    socket: PathBuf,
    #[command(subcommand)]
    command: FsCommand,
}

#[derive(Subcommand)]
enum FsCommand {
    /// List a directory.
    Ls {
        /// Guest directory.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Show an entry's metadata.
    Stat {
        /// Guest path.
        path: String,
    },
    /// Print a file.
    Cat {
        /// Guest file.
        path: String,
    },
    /// Copy a host file into the guest.
    Put {
        /// Host file.
        host: String,
        /// Guest path.
        guest: String,
    },
    /// Copy a guest file to the host.
    Get {
        /// Guest file.
        guest: String,
        /// Host path.
        host: String,
    },
    /// Create a directory and its parents.
    Mkdir {
        /// Guest directory.
        path: String,
    },
    /// Remove a file.
    Rm {
        /// Guest file.
        path: String,
    },
    /// Remove a directory and everything in it.
    Rmdir {
        /// Guest directory.
        path: String,
    },
    /// Copy a guest file.
    Cp {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Move a guest file or directory.
    Mv {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Measure a round trip.
    Ping,
    /// Power the guest off.
    Shutdown,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Top::Run(boot) => run(boot),
        Top::Shell(boot) => shell(boot),
        Top::Demo(boot) => demo(boot),
        Top::Fs(args) => fs(args),
    };
    ExitCode::from(code)
}

/// Reports an error and returns its exit code.
fn fail(e: &Error) -> u8 {
    eprintln!("picosandbox: {e}");
    cli::exit_code(e)
}

fn guest_path(boot: &Boot) -> Result<PathBuf, Error> {
    if let Some(path) = &boot.guest {
        return Ok(path.clone());
    }
    // Built by `cargo xtask guest` next to this binary's target directory.
    let exe = std::env::current_exe()?;
    let target = exe.parent().and_then(|p| p.parent()).map(|t| t.join("x86_64-unknown-none/guest/unikernel"));
    match target {
        Some(path) if path.exists() => Ok(path),
        _ => {
            Err(Error::Boot("no guest ELF: pass --guest or set PICOSANDBOX_GUEST (cargo xtask guest builds it)".into()))
        }
    }
}

fn start(boot: &Boot, relay: bool) -> Result<Sandbox, Error> {
    let mut config = SandboxConfig::new(guest_path(boot)?);
    config.memory_mib = boot.memory;
    config.accel = match boot.accel {
        AccelArg::Auto => Accel::Auto,
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
    };
    config.relay = relay;
    config.guest_log = if boot.log { GuestLog::Stderr } else { GuestLog::Quiet };
    let sandbox = Sandbox::start(config)?;
    let t = sandbox.boot_times();
    eprintln!(
        "picosandbox: guest ready in {:.1} ms (guest: boot {:.2} ms, ready at {:.2} ms); QEMU pid {}",
        t.spawn_to_ready.as_secs_f64() * 1e3,
        t.guest_boot_ns as f64 / 1e6,
        t.guest_ready_ns as f64 / 1e6,
        sandbox.pid()
    );
    Ok(sandbox)
}

fn stop(sandbox: Sandbox) -> u8 {
    match sandbox.shutdown(SHUTDOWN_DEADLINE) {
        Ok(status) if status.success() => EXIT_OK,
        Ok(status) => {
            eprintln!("picosandbox: QEMU exited with {status}");
            EXIT_SANDBOX
        }
        Err(e) => fail(&e),
    }
}

fn run(boot: Boot) -> u8 {
    let sandbox = match start(&boot, true) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let socket = sandbox.relay_socket().map(|p| p.display().to_string()).unwrap_or_default();
    println!("PICOSANDBOX_SOCKET={socket}");
    eprintln!("picosandbox: serving; `picosandbox fs --socket {socket} ls /` in another shell; Ctrl-C stops");
    let (tx, rx) = mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        eprintln!("picosandbox: cannot catch Ctrl-C: {e}");
    }
    // Stop on Ctrl-C, or when the guest goes away by itself.
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(()) => return stop(sandbox),
            Err(mpsc::RecvTimeoutError::Timeout) if sandbox.exit_status().is_none() => {}
            Err(_) => {
                eprintln!("picosandbox: the guest stopped ({:?})", sandbox.exit_status());
                return EXIT_SANDBOX;
            }
        }
    }
}

fn shell(boot: Boot) -> u8 {
    let sandbox = match start(&boot, true) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Some(socket) = sandbox.relay_socket() {
        eprintln!("picosandbox: others can join with PICOSANDBOX_SOCKET={}", socket.display());
    }
    let stdin = std::io::stdin();
    let prompt = stdin.is_terminal();
    if prompt {
        println!("type help for the commands");
    }
    let failures = cli::shell(sandbox.client(), stdin.lock(), &mut std::io::stdout(), &mut std::io::stderr(), prompt);
    let code = stop(sandbox);
    if code == EXIT_OK && failures > 0 && !prompt { cli::EXIT_GUEST_REFUSED } else { code }
}

fn demo(boot: Boot) -> u8 {
    let sandbox = match start(&boot, false) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let steps = cli::demo(sandbox.client(), &mut std::io::stdout());
    let failed = steps.iter().filter(|s| s.failure.is_some()).count();
    let code = stop(sandbox);
    println!("{} shutdown (QEMU exit status 0)", if code == EXIT_OK { "ok  " } else { "FAIL" });
    if failed > 0 || code != EXIT_OK {
        println!("demo: {} of {} steps failed", failed + usize::from(code != EXIT_OK), steps.len() + 1);
        return EXIT_DEMO_FAILED;
    }
    println!("demo: all {} steps checked out", steps.len() + 1);
    EXIT_OK
}

fn fs(args: FsArgs) -> u8 {
    let client = match Client::connect(&args.socket) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let command = match args.command {
        FsCommand::Ls { path } => Command::Ls(path),
        FsCommand::Stat { path } => Command::Stat(path),
        FsCommand::Cat { path } => Command::Cat(path),
        FsCommand::Put { host, guest } => Command::Put(host, guest),
        FsCommand::Get { guest, host } => Command::Get(guest, host),
        FsCommand::Mkdir { path } => Command::Mkdir(path),
        FsCommand::Rm { path } => Command::Rm(path),
        FsCommand::Rmdir { path } => Command::Rmdir(path),
        FsCommand::Cp { src, dst } => Command::Cp(src, dst),
        FsCommand::Mv { src, dst } => Command::Mv(src, dst),
        FsCommand::Ping => Command::Ping,
        FsCommand::Shutdown => {
            return match client.shutdown() {
                Ok(()) => EXIT_OK,
                Err(e) => fail(&e),
            };
        }
    };
    let quiet = !std::io::stderr().is_terminal();
    match cli::run(&client, &command, &mut std::io::stdout().lock(), quiet) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(&e),
    }
}
