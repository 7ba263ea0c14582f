//! The `picosandbox` command line's work, kept in the library so it is
//! tested like the rest: the shell's commands, the one-shot `fs`
//! commands, the scripted demo, and the exit codes scripts rely on.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Client;
use crate::error::Error;
use crate::fs::{Entry, EntryKind};

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

/// The exit status for an error.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Fs { .. } => EXIT_GUEST_REFUSED,
        Error::Timeout(_) => EXIT_TIMEOUT,
        Error::Io(_) => EXIT_LOCAL_IO,
        _ => EXIT_SANDBOX,
    }
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
  ping                 measure a round trip to the guest
  help                 this text
  exit                 leave (the sandbox shuts down)
paths with spaces go in double quotes";

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
    /// `ping`
    Ping,
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
            "ping" => Command::Ping,
            "help" | "?" => Command::Help,
            "exit" | "quit" => Command::Exit,
            other => return Err(format!("unknown command {other:?}; try help")),
        };
        let args = match &command {
            Command::Ping | Command::Help | Command::Exit => 0,
            Command::Put(..) | Command::Get(..) | Command::Cp(..) | Command::Mv(..) => 2,
            Command::Ls(_) => 1,
            _ => 1,
        };
        expect(args)?;
        Ok(command)
    }
}

/// `rwxr-xr-x` for permission bits.
pub fn permissions(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// One `ls` line: type, permissions, size, path.
pub fn ls_line(e: &Entry) -> String {
    let kind = match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
        _ => '?',
    };
    format!("{kind}{} {:>12} {}", permissions(e.mode), e.size, e.path)
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

/// Runs one command against `client`, writing its output to `out`.
/// `quiet` hides progress bars (for scripts and tests).
pub fn run(client: &Client, command: &Command, out: &mut impl Write, quiet: bool) -> Result<(), Error> {
    let fs = client.fs();
    match command {
        Command::Ls(path) => {
            let mut entries = fs.list(path)?;
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            for e in entries {
                writeln!(out, "{}", ls_line(&e))?;
            }
        }
        Command::Stat(path) => {
            let e = fs.stat(path)?;
            writeln!(out, "path:     {}", e.path)?;
            writeln!(out, "kind:     {:?}", e.kind)?;
            writeln!(out, "size:     {}", e.size)?;
            writeln!(out, "mode:     {:o} ({})", e.mode, permissions(e.mode))?;
            match e.modified {
                Some(t) => writeln!(out, "modified: {t} (Unix seconds)")?,
                None => writeln!(out, "modified: unknown")?,
            }
        }
        Command::Cat(path) => {
            fs.read_to(path, out)?;
        }
        Command::Put(host, guest) => {
            let len = std::fs::metadata(host)?.len();
            let bar = progress(len, &format!("put {guest}"), quiet);
            let n = match &bar {
                Some(bar) => {
                    let file = std::fs::File::open(host)?;
                    put_with(client, &mut bar.wrap_read(file), Path::new(host), guest)?
                }
                None => fs.copy_from_host(host, guest)?,
            };
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            writeln!(out, "{n} bytes -> {guest}")?;
        }
        Command::Get(guest, host) => {
            let len = fs.stat(guest)?.size;
            let bar = progress(len, &format!("get {guest}"), quiet);
            let file = std::io::BufWriter::new(std::fs::File::create(host)?);
            let n = match &bar {
                Some(bar) => fs.read_to(guest, &mut bar.wrap_write(file))?,
                None => fs.read_to(guest, &mut { file })?,
            };
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            writeln!(out, "{n} bytes -> {host}")?;
        }
        Command::Mkdir(path) => fs.mkdir(path)?,
        Command::Rm(path) => fs.remove(path)?,
        Command::Rmdir(path) => fs.remove_dir(path)?,
        Command::Cp(src, dst) => fs.copy(src, dst)?,
        Command::Mv(src, dst) => fs.rename(src, dst)?,
        Command::Ping => {
            let rtt = client.ping()?;
            writeln!(out, "pong in {:.3} ms", rtt.as_secs_f64() * 1e3)?;
        }
        Command::Help => writeln!(out, "{SHELL_HELP}")?,
        Command::Exit => {}
    }
    Ok(())
}

/// `put` through a progress-reporting reader, keeping the file's permissions.
fn put_with(client: &Client, input: &mut impl Read, host: &Path, guest: &str) -> Result<u64, Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(host)?.permissions().mode() & 0o7777;
    client.fs().write_from_with_mode(guest, input, Some(mode))
}

/// The interactive shell: reads commands from `input` until `exit` or end
/// of input. Errors are printed and the shell goes on; returns the number
/// of commands that failed.
pub fn shell(client: &Client, input: impl BufRead, out: &mut impl Write, err: &mut impl Write, prompt: bool) -> usize {
    let mut failures = 0;
    let mut lines = input.lines();
    loop {
        if prompt {
            let _ = write!(out, "picosandbox> ");
            let _ = out.flush();
        }
        let Some(Ok(line)) = lines.next() else { break };
        let words = match words(&line) {
            Ok(w) if w.is_empty() => continue,
            Ok(w) => w,
            Err(e) => {
                let _ = writeln!(err, "{e}");
                failures += 1;
                continue;
            }
        };
        match Command::parse(&words) {
            Ok(Command::Exit) => break,
            Ok(command) => {
                if let Err(e) = run(client, &command, out, !prompt) {
                    let _ = writeln!(err, "error: {e}");
                    failures += 1;
                }
            }
            Err(e) => {
                let _ = writeln!(err, "{e}");
                failures += 1;
            }
        }
    }
    failures
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
        fs.remove("/demo/copy.bin").and_then(|()| fs.remove_dir("/demo")).map_err(e).and_then(|()| {
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
    }

    #[test]
    fn permissions_render_like_ls() {
        assert_eq!(permissions(0o100_644), "rw-r--r--");
        assert_eq!(permissions(0o755), "rwxr-xr-x");
    }

    #[test]
    fn errors_map_to_stable_exit_codes() {
        let fs = Error::Fs { op: "stat", path: "/x".into(), message: "stat: not found".into() };
        assert_eq!(exit_code(&fs), EXIT_GUEST_REFUSED);
        assert_eq!(exit_code(&Error::Timeout(Duration::from_secs(1))), EXIT_TIMEOUT);
        assert_eq!(exit_code(&Error::VmExited("x".into())), EXIT_SANDBOX);
        assert_eq!(exit_code(&Error::Io(std::io::ErrorKind::NotFound.into())), EXIT_LOCAL_IO);
    }
}
