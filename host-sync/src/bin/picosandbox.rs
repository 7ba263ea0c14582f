//! `picosandbox`: boot a sandbox and serve it, open a shell in one, or
//! drive a running one from scripts.
//!
//! Exit codes: 0 success, 1 the guest refused the operation, 2 bad usage,
//! 3 the sandbox could not be reached or booted, 4 timeout, 5 a local file
//! error, 6 a demo step failed, 130 interrupted (Ctrl-C).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use host_sync::cli::{self, Command, EXIT_DEMO_FAILED, EXIT_LOCAL_IO, EXIT_OK, EXIT_SANDBOX, SHUTDOWN_DEADLINE};
use host_sync::config::{ConfigError, Setting};
use host_sync::pool::{MAX_POOL_SIZE, PoolConfig, PoolError, SandboxPool};
use host_sync::{Accel, Error, GuestLog, Sandbox, SandboxConfig, local};
use host_sync::{format, shell};

/// Boot, drive and share picosandbox guests.
#[derive(Parser)]
#[command(name = "picosandbox", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Boot a sandbox (or --pool K of them), serve each one's relay socket, print the socket paths; stop on Ctrl-C.
    Run(RunArgs),
    /// Boot a sandbox and open a shell in it (reads commands from standard input when it is not a terminal).
    Shell(ShellArgs),
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
    /// Guest memory in MiB (the guest filesystem gets nearly all of it); at
    /// least what the guest needs (8 MiB for today's guest), at most 3072.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// CPU acceleration: KVM only where a hardware KVM module is loaded.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Print the guest's log on standard error.
    #[arg(long)]
    log: bool,
    /// Refuse core.shutdown from relay clients (by default any client of the socket may power the guest off, as with the reference).
    #[arg(long)]
    forbid_client_shutdown: bool,
}

/// `run`'s options.
#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    boot: Boot,
    /// Serve K sandboxes, each behind its own relay socket: one line `PICOSANDBOX_SOCKET=PATH` on standard output
    /// as each becomes ready; a sandbox that stops (a client sent core.shutdown) prints `PICOSANDBOX_STOPPED=PATH`
    /// and is replaced by a fresh one (a new socket line).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..=MAX_POOL_SIZE as i64))]
    pool: Option<u16>,
    /// With --pool: booted sandboxes kept ready behind the served ones, so a stopped one is replaced at once.
    #[arg(long, default_value_t = 1, requires = "pool", value_parser = clap::value_parser!(u16).range(1..=MAX_POOL_SIZE as i64))]
    spares: u16,
}

/// The shell's options.
#[derive(Args)]
struct ShellArgs {
    #[command(flatten)]
    boot: Boot,
    /// Reading commands from a pipe or file: run them all, even after one fails (the exit status is still the first failure's).
    #[arg(long)]
    keep_going: bool,
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
        /// Print one JSON document: {"path": DIR, "entries": [{path, kind, size, mode, modified}...]}.
        #[arg(long)]
        json: bool,
    },
    /// Show an entry's metadata.
    Stat {
        /// Guest path.
        path: String,
        /// Print one JSON document: {path, kind, size, mode, modified}.
        #[arg(long)]
        json: bool,
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
        Top::Run(args) => match args.pool {
            Some(k) => run_pool(&args, usize::from(k)),
            None => run(args.boot),
        },
        Top::Shell(args) => shell(args),
        Top::Demo(boot) => demo(boot),
        Top::Fs(args) => fs(args),
    };
    ExitCode::from(code)
}

/// Reports an error and returns its exit code.
fn fail(e: &Error) -> u8 {
    eprintln!("picosandbox: {}", cli::message(e));
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
        _ => Err(Error::Config(ConfigError {
            setting: Setting::Guest,
            value: "(none)".into(),
            problem: "no guest ELF given, and none built next to this binary".into(),
            fix: "pass --guest or set PICOSANDBOX_GUEST (`cargo xtask guest` builds one)".into(),
        })),
    }
}

fn sandbox_config(boot: &Boot, relay: bool) -> Result<SandboxConfig, Error> {
    let mut config = SandboxConfig::new(guest_path(boot)?);
    config.memory_mib = boot.memory;
    config.accel = match boot.accel {
        AccelArg::Auto => Accel::Auto,
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
    };
    config.relay = relay;
    config.relay_options.client_shutdown = !boot.forbid_client_shutdown;
    config.guest_log = if boot.log { GuestLog::Stderr } else { GuestLog::Quiet };
    Ok(config)
}

fn start(boot: &Boot, relay: bool) -> Result<Sandbox, Error> {
    let config = sandbox_config(boot, relay)?;
    // Everything that can be checked is, before QEMU starts.
    let checked = config.check()?;
    for warning in &checked.warnings {
        eprintln!("picosandbox: warning: {}", warning.for_cli());
    }
    let sandbox = Sandbox::start_checked(checked)?;
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

/// What the main thread of `run` and `shell` waits for.
enum Event {
    /// Ctrl-C, SIGTERM or SIGHUP.
    Signal,
    /// The shell's input ended or it was told to exit; its exit status.
    ShellDone(u8),
}

/// Turns Ctrl-C, SIGTERM and SIGHUP into [`Event::Signal`], so the
/// sandbox is shut down cleanly and its runtime directory removed. Set
/// before booting: a signal during the boot is acted on once it ends.
fn catch_signals(events: mpsc::Sender<Event>) {
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = events.send(Event::Signal);
    }) {
        eprintln!("picosandbox: cannot catch Ctrl-C, SIGTERM and SIGHUP: {e}");
    }
}

fn run(boot: Boot) -> u8 {
    let (tx, rx) = mpsc::channel();
    catch_signals(tx);
    let sandbox = match start(&boot, true) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let socket = sandbox.relay_socket().map(|p| p.display().to_string()).unwrap_or_default();
    println!("PICOSANDBOX_SOCKET={socket}");
    eprintln!("picosandbox: serving; `picosandbox fs --socket {socket} ls /` in another shell; Ctrl-C stops");
    // Stop on a signal, or when the guest goes away by itself.
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(_) => return stop(sandbox),
            Err(mpsc::RecvTimeoutError::Timeout) if sandbox.exit_status().is_none() => {}
            Err(_) => {
                eprintln!("picosandbox: the guest stopped ({:?})", sandbox.exit_status());
                return EXIT_SANDBOX;
            }
        }
    }
}

/// How often `run --pool` looks for stopped sandboxes and signals.
const POOL_TICK: Duration = Duration::from_millis(100);

/// `run --pool K`: serves `k` sandboxes from a [`SandboxPool`], printing
/// each one's socket as it becomes ready and replacing any that stops.
fn run_pool(args: &RunArgs, k: usize) -> u8 {
    let (tx, rx) = mpsc::channel();
    catch_signals(tx);
    let spares = usize::from(args.spares);
    let config = match sandbox_config(&args.boot, true) {
        Ok(c) => PoolConfig::new(c, spares),
        Err(e) => return fail(&e),
    };
    let pool = match SandboxPool::new(config) {
        Ok(pool) => pool,
        Err(e) => return fail_pool(&e),
    };
    for warning in &pool.checked().warnings {
        eprintln!("picosandbox: warning: {}", warning.for_cli());
    }
    eprintln!("picosandbox: serving {k} sandboxes ({spares} more kept ready); Ctrl-C stops them all");
    let mut served: Vec<(Sandbox, String)> = Vec::with_capacity(k);
    let code = loop {
        if rx.try_recv().is_ok() {
            break EXIT_OK;
        }
        // Replace what stopped: its socket is gone for good.
        served.retain(|(sandbox, socket)| match sandbox.exit_status() {
            None => true,
            Some(status) => {
                println!("PICOSANDBOX_STOPPED={socket}");
                eprintln!("picosandbox: the sandbox at {socket} stopped ({status}); replacing it");
                false
            }
        });
        if served.len() == k {
            match rx.recv_timeout(POOL_TICK) {
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                _ => break EXIT_OK,
            }
        }
        match pool.acquire(POOL_TICK) {
            Ok(sandbox) => {
                let socket = sandbox.relay_socket().map(|p| p.display().to_string()).unwrap_or_default();
                eprintln!("picosandbox: sandbox ready at {socket}; QEMU pid {}", sandbox.pid());
                println!("PICOSANDBOX_SOCKET={socket}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
                served.push((sandbox, socket));
            }
            Err(PoolError::Timeout(_)) => {}
            Err(e) => break fail_pool(&e),
        }
    };
    // Spares first (killed: nobody used them), then the served ones, each
    // powered off cleanly.
    drop(pool);
    let mut worst = code;
    for (sandbox, _) in served {
        let stopped = stop(sandbox);
        if worst == EXIT_OK {
            worst = stopped;
        }
    }
    worst
}

/// Reports a pool error and returns its exit code.
fn fail_pool(e: &PoolError) -> u8 {
    match e {
        PoolError::Config(e) => fail(e),
        PoolError::Refill { error, .. } => {
            eprintln!("picosandbox: {e}");
            cli::exit_code(error)
        }
        PoolError::Bounds(_) => {
            eprintln!("picosandbox: {e}");
            cli::EXIT_USAGE
        }
        PoolError::Timeout(_) | PoolError::Closed => {
            eprintln!("picosandbox: {e}");
            EXIT_SANDBOX
        }
    }
}

fn shell(args: ShellArgs) -> u8 {
    let (tx, rx) = mpsc::channel();
    catch_signals(tx.clone());
    let sandbox = match start(&args.boot, true) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Some(socket) = sandbox.relay_socket() {
        eprintln!("picosandbox: others can join with PICOSANDBOX_SOCKET={}", socket.display());
    }
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    // The terminal's settings, restored if a signal ends the shell while
    // the line editor has the terminal in raw mode.
    let saved = terminal.then(|| rustix::termios::tcgetattr(&stdin).ok()).flatten();
    if terminal {
        println!("type help for the commands; Tab completes, Ctrl-D leaves");
    }
    // The shell runs on a thread, so SIGTERM or SIGHUP can stop the sandbox
    // cleanly while it waits for a line. Ctrl-C at the terminal is read as
    // a key (see `shell`), not as a signal.
    let client = sandbox.client().clone();
    let keep_going = args.keep_going;
    let shell = std::thread::Builder::new().name("picosandbox-shell".into()).spawn(move || {
        let code = if terminal {
            let history =
                shell::history_path(std::env::var_os("XDG_STATE_HOME").as_deref(), std::env::var_os("HOME").as_deref());
            match shell::interactive(&client, history.as_deref()) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    eprintln!("picosandbox: the terminal failed: {e}");
                    EXIT_LOCAL_IO
                }
            }
        } else {
            let stdin = std::io::stdin();
            let outcome =
                shell::run_script(&client, stdin.lock(), &mut std::io::stdout(), &mut std::io::stderr(), keep_going);
            outcome.exit_code
        };
        let _ = tx.send(Event::ShellDone(code));
    });
    if let Err(e) = shell {
        eprintln!("picosandbox: cannot start the shell: {e}");
        return stop(sandbox);
    }
    match rx.recv() {
        Ok(Event::ShellDone(shell_code)) => {
            let code = stop(sandbox);
            if shell_code != EXIT_OK { shell_code } else { code }
        }
        // A `get` the shell was running fails as the guest stops; its
        // partial file goes before the process exits.
        Ok(Event::Signal) | Err(_) => {
            if let Some(saved) = &saved {
                let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, saved);
            }
            let code = stop(sandbox);
            local::exit_removing_partial_downloads(i32::from(code))
        }
    }
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
    let client = match cli::connect(&args.socket) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let command = match args.command {
        FsCommand::Ls { path, json: true } => {
            return print_json(client.fs().list(&path).map(|entries| format::list_json(&path, &entries)));
        }
        FsCommand::Stat { path, json: true } => {
            return print_json(client.fs().stat(&path).map(|e| format::stat_json(&e)));
        }
        FsCommand::Ls { path, json: false } => Command::Ls(path),
        FsCommand::Stat { path, json: false } => Command::Stat(path),
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
    // Interrupted during a `get`: the partial download goes with the process.
    if let Err(e) = ctrlc::set_handler(|| local::exit_removing_partial_downloads(i32::from(cli::EXIT_INTERRUPTED))) {
        eprintln!("picosandbox: cannot catch Ctrl-C: {e}");
    }
    let options = cli::Options {
        quiet: !std::io::stderr().is_terminal(),
        colour: format::colour_for_stdout(),
        cancel: Default::default(),
    };
    match cli::run_with(&client, &command, &mut std::io::stdout().lock(), &options) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(&e),
    }
}

/// Prints a JSON document, or reports the error (nothing on stdout then).
fn print_json(document: Result<String, Error>) -> u8 {
    match document {
        Ok(json) => {
            println!("{json}");
            EXIT_OK
        }
        Err(e) => fail(&e),
    }
}
