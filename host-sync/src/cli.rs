//! The `picosandbox` command line's work, kept in the library so it is
//! tested like the rest: the shell's commands (the shell itself is in
//! [`crate::shell`]), the one-shot `fs` commands, the scripted demo, and
//! the exit codes scripts rely on.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cancel::{Cancel, CancelReader, CancelWriter};
use crate::client::Client;
use crate::error::Error;
use crate::format;
use crate::fs::open_host;
use crate::local::Download;

/// Whether an I/O error is a cancelled transfer's (kept as it is, so
/// callers can tell a cancel from a failure).
fn is_cancel_io(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<crate::cancel::Cancelled>())
}

/// Transfers larger than this get a progress bar.
pub const PROGRESS_THRESHOLD: u64 = 1 << 20;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the guest refused the operation (not found, not a directory, ...).
pub const EXIT_GUEST_REFUSED: u8 = 1;
/// Exit status: bad usage (also clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the sandbox could not be reached, booted, or understood.
pub const EXIT_SANDBOX: u8 = 3;
/// Exit status: no answer in time.
pub const EXIT_TIMEOUT: u8 = 4;
/// Exit status: a local file could not be read or written.
pub const EXIT_LOCAL_IO: u8 = 5;
/// Exit status: the demo found a step that did not check out.
pub const EXIT_DEMO_FAILED: u8 = 6;
/// Exit status: stopped by a signal (Ctrl-C), as shells report `SIGINT`.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit status for an error.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Config(_) => EXIT_USAGE,
        Error::Fs { .. } => EXIT_GUEST_REFUSED,
        Error::Timeout(_) => EXIT_TIMEOUT,
        Error::Io(_) | Error::LocalFile { .. } => EXIT_LOCAL_IO,
        _ => EXIT_SANDBOX,
    }
}

/// An error as the command line words it: settings by their option names
/// (`--memory 1: ...`).
pub fn message(e: &Error) -> String {
    match e {
        Error::Config(c) => c.for_cli(),
        other => other.to_string(),
    }
}

/// Connects to a running sandbox's relay: a socket that is missing or
/// that nothing listens on is [`Error::Unreachable`] (exit
/// [`EXIT_SANDBOX`]), not a local file error.
pub fn connect(socket: &Path) -> Result<Client, Error> {
    Client::connect(socket).map_err(|e| match e {
        Error::Io(source) => Error::Unreachable { socket: socket.to_path_buf(), source },
        other => other,
    })
}

/// The shell's help text.
pub const SHELL_HELP: &str = "\
commands:
  ls [PATH]            list a directory (default /)
  stat PATH            show an entry's metadata
  cat PATH             print a file
  put HOST GUEST       copy a host file into the guest
  get GUEST HOST       copy a guest file to the host
  mkdir PATH           create a directory and its parents
  rm PATH              remove a file
  rmdir PATH           remove a directory and everything in it
  cp SRC DST           copy a guest file
  mv SRC DST           move a guest file or directory
  ln -s TARGET LINK    make a symbolic link LINK pointing at TARGET
  readlink PATH        print where a symbolic link points
  chmod MODE PATH      set permission bits (octal, e.g. 644 or 1777)
  touch PATH           create an empty file, or set an existing one's times to now
  truncate SIZE PATH   make a file SIZE bytes long (cut, or extended with zeros; created if missing)
  ping                 measure a round trip to the guest
  clear                clear the screen
  help                 this text
  exit                 leave (the sandbox shuts down)
paths with spaces go in double quotes
keys: Tab completes commands and paths, Up/Down walk the history,
Ctrl-R searches it, Ctrl-C drops the line or cancels a transfer,
Ctrl-D leaves";

/// Splits a command line into words; double quotes group words.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err("unclosed quote".into());
    }
    if any {
        out.push(word);
    }
    Ok(out)
}

/// One shell or `fs` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ls [PATH]`
    Ls(String),
    /// `stat PATH`
    Stat(String),
    /// `cat PATH`
    Cat(String),
    /// `put HOST GUEST`
    Put(String, String),
    /// `get GUEST HOST`
    Get(String, String),
    /// `mkdir PATH`
    Mkdir(String),
    /// `rm PATH`
    Rm(String),
    /// `rmdir PATH`
    Rmdir(String),
    /// `cp SRC DST`
    Cp(String, String),
    /// `mv SRC DST`
    Mv(String, String),
    /// `ln -s TARGET LINK`
    Symlink(String, String),
    /// `readlink PATH`
    Readlink(String),
    /// `chmod MODE PATH` (octal permission bits)
    Chmod(u32, String),
    /// `touch PATH`
    Touch(String),
    /// `truncate SIZE PATH`
    Truncate(u64, String),
    /// `ping`
    Ping,
    /// `clear` (the shell clears the screen; elsewhere it does nothing)
    Clear,
    /// `help`
    Help,
    /// `exit`
    Exit,
}

impl Command {
    /// Parses a word list (`ls /tmp`).
    pub fn parse(words: &[String]) -> Result<Command, String> {
        let arg = |i: usize| words.get(i).cloned().ok_or_else(|| format!("{}: missing argument", words[0]));
        let Some(name) = words.first() else { return Err("empty command".into()) };
        let expect = |n: usize| {
            if words.len() > n + 1 { Err(format!("{name}: too many arguments")) } else { Ok(()) }
        };
        let command = match name.as_str() {
            "ls" => {
                expect(1)?;
                Command::Ls(words.get(1).cloned().unwrap_or_else(|| "/".into()))
            }
            "stat" => Command::Stat(arg(1)?),
            "cat" => Command::Cat(arg(1)?),
            "put" => Command::Put(arg(1)?, arg(2)?),
            "get" => Command::Get(arg(1)?, arg(2)?),
            "mkdir" => Command::Mkdir(arg(1)?),
            "rm" => Command::Rm(arg(1)?),
            "rmdir" => Command::Rmdir(arg(1)?),
            "cp" => Command::Cp(arg(1)?, arg(2)?),
            "mv" => Command::Mv(arg(1)?, arg(2)?),
            "ln" => {
                if words.get(1).map(String::as_str) != Some("-s") {
                    return Err("ln: only symbolic links: ln -s TARGET LINK".into());
                }
                if words.len() > 4 {
                    return Err("ln: too many arguments".into());
                }
                return Ok(Command::Symlink(arg(2)?, arg(3)?));
            }
            "readlink" => Command::Readlink(arg(1)?),
            "chmod" => {
                let mode = arg(1)?;
                let bits = u32::from_str_radix(&mode, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("chmod: {mode:?} is not an octal mode (0 to 7777)"))?;
                Command::Chmod(bits, arg(2)?)
            }
            "touch" => Command::Touch(arg(1)?),
            "truncate" => {
                let size = arg(1)?;
                let bytes = size.parse().map_err(|_| format!("truncate: {size:?} is not a size in bytes"))?;
                Command::Truncate(bytes, arg(2)?)
            }
            "ping" => Command::Ping,
            "clear" => Command::Clear,
            "help" | "?" => Command::Help,
            "exit" | "quit" => Command::Exit,
            other => return Err(format!("unknown command {other:?}; try help")),
        };
        let args = match &command {
            Command::Ping | Command::Clear | Command::Help | Command::Exit => 0,
            Command::Put(..)
            | Command::Get(..)
            | Command::Cp(..)
            | Command::Mv(..)
            | Command::Symlink(..)
            | Command::Chmod(..)
            | Command::Truncate(..) => 2,
            Command::Ls(_) => 1,
            _ => 1,
        };
        expect(args)?;
        Ok(command)
    }
}

fn progress(len: u64, what: &str, quiet: bool) -> Option<ProgressBar> {
    if quiet || len <= PROGRESS_THRESHOLD {
        return None;
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    Some(bar)
}

/// How [`run_with`] runs a command.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Hide progress bars (for scripts and tests).
    pub quiet: bool,
    /// Colour names in listings (see [`format::colour_wanted`]).
    pub colour: bool,
    /// Set from another thread to cancel a transfer (`cat`, `put`, `get`).
    pub cancel: Cancel,
}

/// Runs one command against `client`, writing its output to `out`.
/// `quiet` hides progress bars (for scripts and tests).
pub fn run(client: &Client, command: &Command, out: &mut impl Write, quiet: bool) -> Result<(), Error> {
    run_with(client, command, out, &Options { quiet, ..Options::default() })
}

/// The time now in Unix seconds (0 if the clock is before 1970).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// [`run`] with colours and a cancel flag: a transfer fails with
/// [`crate::cancel::Cancelled`] within a chunk of the flag being set.
pub fn run_with(client: &Client, command: &Command, out: &mut impl Write, options: &Options) -> Result<(), Error> {
    let fs = client.fs();
    let (quiet, cancel) = (options.quiet, &options.cancel);
    match command {
        Command::Ls(path) => {
            let entries = fs.list(path)?;
            write!(out, "{}", format::listing(&entries, unix_now(), &chrono::Local, options.colour))?;
        }
        Command::Stat(path) => {
            let e = fs.stat(path)?;
            write!(out, "{}", format::stat_text(&e, &chrono::Local))?;
        }
        Command::Cat(path) => {
            fs.read_to(path, &mut CancelWriter::new(&mut *out, cancel))?;
        }
        Command::Put(host, guest) => {
            let (file, mode) = open_host(Path::new(host))?;
            let len = file.metadata().map_err(|e| Error::local("read", host, e))?.len();
            let bar = progress(len, &format!("put {guest}"), quiet);
            let file = CancelReader::new(file, cancel);
            let sent = match &bar {
                Some(bar) => fs.write_from_with_mode(guest, &mut bar.wrap_read(file), Some(mode)),
                None => fs.write_from_with_mode(guest, &mut { file }, Some(mode)),
            }
            .map_err(|e| match e {
                Error::Io(io) if !is_cancel_io(&io) => Error::local("read", host, io),
                other => other,
            });
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            writeln!(out, "{} bytes -> {guest}", sent?)?;
        }
        Command::Get(guest, host) => {
            let len = fs.stat(guest)?.size;
            // The host file is replaced only when the whole file arrived.
            let mut download = Download::create(host)?;
            let bar = progress(len, &format!("get {guest}"), quiet);
            let n = match &bar {
                Some(bar) => fs.read_to(guest, &mut bar.wrap_write(CancelWriter::new(&mut download, cancel))),
                None => fs.read_to(guest, &mut CancelWriter::new(&mut download, cancel)),
            }
            .map_err(|e| download.name_error(e))?;
            download.commit()?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            writeln!(out, "{n} bytes -> {host}")?;
        }
        Command::Mkdir(path) => fs.mkdir(path)?,
        Command::Rm(path) => fs.remove(path)?,
        Command::Rmdir(path) => fs.remove_dir_all(path)?,
        Command::Cp(src, dst) => fs.copy(src, dst)?,
        Command::Mv(src, dst) => fs.rename(src, dst)?,
        Command::Symlink(target, link) => fs.symlink(target, link)?,
        Command::Readlink(path) => writeln!(out, "{}", fs.read_link(path)?)?,
        Command::Chmod(mode, path) => fs.set_permissions(path, *mode)?,
        Command::Touch(path) => {
            // As touch(1): a new empty file, or an existing one's times now.
            let file = fs.open(path, crate::fs::OpenOptions::new().write(true).create(true))?;
            let now = unix_now();
            file.set_times(Some(now), Some(now))?;
            file.close()?;
        }
        Command::Truncate(size, path) => {
            // As truncate(1) -s: created if missing, then cut or extended.
            let file = fs.open(path, crate::fs::OpenOptions::new().write(true).create(true))?;
            file.set_len(*size)?;
            file.close()?;
        }
        Command::Ping => {
            let rtt = client.ping()?;
            writeln!(out, "pong in {:.3} ms", rtt.as_secs_f64() * 1e3)?;
        }
        Command::Help => writeln!(out, "{SHELL_HELP}")?,
        Command::Clear | Command::Exit => {}
    }
    Ok(())
}

/// One step of the demo and whether it checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoStep {
    /// What the step did.
    pub name: String,
    /// `None` when it checked out, else why not.
    pub failure: Option<String>,
}

/// A short scripted session: write, list, stat, read back and compare,
/// copy, rename, remove. Every step is checked; the caller ends it with a
/// shutdown. Uses `/demo` in the guest.
pub fn demo(client: &Client, out: &mut impl Write) -> Vec<DemoStep> {
    let fs = client.fs();
    let mut steps = Vec::new();
    let mut step = |name: &str, result: Result<(), String>| {
        let _ = writeln!(
            out,
            "{} {name}{}",
            if result.is_ok() { "ok  " } else { "FAIL" },
            match &result {
                Ok(()) => String::new(),
                Err(e) => format!(": {e}"),
            }
        );
        steps.push(DemoStep { name: name.to_string(), failure: result.err() });
    };
    let small = b"hello from the host\n".to_vec();
    let big: Vec<u8> = (0..(3u32 << 20) + 12_345).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let e = |e: Error| e.to_string();
    step("ping", client.ping().map(|_| ()).map_err(e));
    step("write /demo/hello.txt", fs.write("/demo/hello.txt", &small).map_err(e));
    step("write /demo/data.bin (3 MiB + 12 KiB)", fs.write("/demo/data.bin", &big).map_err(e));
    step(
        "list /demo",
        fs.list("/demo").map_err(e).and_then(|l| {
            let mut names: Vec<_> = l.iter().map(|x| x.path.as_str()).collect();
            names.sort();
            match names.as_slice() {
                ["/demo/data.bin", "/demo/hello.txt"] => Ok(()),
                other => Err(format!("unexpected listing {other:?}")),
            }
        }),
    );
    step(
        "stat /demo/data.bin",
        fs.stat("/demo/data.bin")
            .map_err(e)
            .and_then(|s| if s.is_file() && s.size == big.len() as u64 { Ok(()) } else { Err(format!("got {s:?}")) }),
    );
    step(
        "read back and compare",
        fs.read("/demo/data.bin")
            .map_err(e)
            .and_then(|d| if d == big { Ok(()) } else { Err("content differs".into()) }),
    );
    step(
        "copy to /demo/copy.bin",
        fs.copy("/demo/data.bin", "/demo/copy.bin").map_err(e).and_then(|()| {
            let d = fs.read("/demo/copy.bin").map_err(e)?;
            if d == big { Ok(()) } else { Err("the copy differs".into()) }
        }),
    );
    step(
        "rename to /demo/moved/hello.txt",
        fs.rename("/demo/hello.txt", "/demo/moved/hello.txt").map_err(e).and_then(|()| {
            match (fs.exists("/demo/hello.txt"), fs.read("/demo/moved/hello.txt")) {
                (Ok(false), Ok(d)) if d == small => Ok(()),
                other => Err(format!("after the rename: {other:?}")),
            }
        }),
    );
    step(
        "remove /demo",
        fs.remove("/demo/copy.bin").and_then(|()| fs.remove_dir_all("/demo")).map_err(e).and_then(|()| {
            match fs.exists("/demo") {
                Ok(false) => Ok(()),
                other => Err(format!("/demo still there: {other:?}")),
            }
        }),
    );
    steps
}

/// A sensible timeout for waiting on QEMU to exit after `core.shutdown`.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, String> {
        Command::parse(&words(line)?)
    }

    #[test]
    fn words_honour_quotes() {
        assert_eq!(words(r#"put "my file" /x"#).unwrap(), ["put", "my file", "/x"]);
        assert_eq!(words("  ls   ").unwrap(), ["ls"]);
        assert_eq!(words(r#"stat """#).unwrap(), ["stat", ""]);
        assert!(words(r#"cat "open"#).is_err());
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse("ls").unwrap(), Command::Ls("/".into()));
        assert_eq!(parse("cp /a /b").unwrap(), Command::Cp("/a".into(), "/b".into()));
        assert!(parse("cp /a").is_err());
        assert!(parse("ping now").is_err());
        assert!(parse("frobnicate").unwrap_err().contains("unknown command"));
        assert_eq!(parse("quit").unwrap(), Command::Exit);
        assert_eq!(parse("clear").unwrap(), Command::Clear);
        assert!(parse("clear now").is_err());
    }

    #[test]
    fn errors_map_to_stable_exit_codes() {
        let fs = Error::Fs { op: "stat", path: "/x".into(), message: "stat: not found".into() };
        assert_eq!(exit_code(&fs), EXIT_GUEST_REFUSED);
        assert_eq!(exit_code(&Error::Timeout(Duration::from_secs(1))), EXIT_TIMEOUT);
        assert_eq!(exit_code(&Error::VmExited("x".into())), EXIT_SANDBOX);
        assert_eq!(exit_code(&Error::Boot("x".into())), EXIT_SANDBOX);
        let config = crate::config::ConfigError {
            setting: crate::config::Setting::Memory,
            value: "0".into(),
            problem: "too small".into(),
            fix: "give it more".into(),
        };
        assert_eq!(message(&Error::Config(config.clone())), "--memory 0: too small; give it more");
        assert_eq!(exit_code(&Error::Config(config)), EXIT_USAGE);
        assert_eq!(exit_code(&Error::Io(std::io::ErrorKind::NotFound.into())), EXIT_LOCAL_IO);
        let missing = std::io::Error::from_raw_os_error(2);
        let local = Error::local("open", "./x", missing);
        assert_eq!(
            (exit_code(&local), local.to_string().as_str()),
            (EXIT_LOCAL_IO, "cannot open ./x: No such file or directory")
        );
        let unreachable = Error::Unreachable { socket: "/s".into(), source: std::io::Error::from_raw_os_error(111) };
        assert_eq!(exit_code(&unreachable), EXIT_SANDBOX);
        assert_eq!(unreachable.to_string(), "cannot reach the sandbox at /s: Connection refused");
    }
}
