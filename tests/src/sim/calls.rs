//! One call in flight and the checks on its answer: every answer is
//! compared with what the model predicts (exact error messages, `Stat` and
//! `List` metadata, read data byte for byte), and a write's "no space"
//! answer is accepted only if the space bound says it could happen.

use agent_core::mode;
use wire::{Body, FsEntryInfo, FsEntryKind, FsResponse, FsResponseData, Message};

use super::content::Content;
use super::model::{Expect, Info, Op};
use super::space::Reservation;
use super::violation;
use super::world::{Shared, UNIX_BASE_NS};

/// The answer of every read or write a shutdown cuts short.
pub const SHUTDOWN_ABORT: &str = "shutdown: session aborted";

/// The answer to data for a write that already ended (it failed).
pub const UNKNOWN_WRITE_SESSION: &str = "write: unknown write session";

/// The answer to a write that ran out of space.
pub const NO_SPACE: &str = "write: No space left on device (os error 28)";

/// The answer to a symlink that ran out of space for its target.
pub const SYMLINK_NO_SPACE: &str = "symlink: No space left on device (os error 28)";

/// What the agent must answer to a corrupted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptAnswer {
    /// It still decodes as a `Stat` or `List`: a `core.fs.response`.
    Response,
    /// It does not decode: a `core.error`.
    Error,
    /// It does not decode and claims a generation below 5, which must
    /// not be sent `core.error`: nothing.
    Silence,
}

/// Why a call was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A workload request, checked against the model.
    Normal,
    /// A request with flipped bytes.
    Corrupt(CorruptAnswer),
    /// A `List` of the root in a flood: any well-formed listing of client
    /// roots will do (other clients change the root meanwhile).
    Flood,
    /// A `Remove` of a symlink whose `Symlink` call a lost connection left
    /// undecided (space may have run out): either answer is right, and
    /// afterwards there is no symlink.
    LinkProbe,
    /// A probe of the write a lost connection left open.
    Probe {
        /// Index of the write in the client's open writes.
        target: usize,
        /// A `Stat` probe (else a `Read` probe).
        stat: bool,
    },
}

/// Read data checked against one or two possible contents (`None`: the
/// file must be missing).
#[derive(Debug, Clone)]
pub struct ReadCheck {
    offset: u64,
    candidates: [Option<Content>; 2],
    /// Bit `i`: candidate `i` still matches.
    pub alive: u8,
}

impl ReadCheck {
    /// Exactly `content`.
    pub fn one(content: Content) -> ReadCheck {
        ReadCheck { offset: 0, candidates: [Some(content), None], alive: 0b01 }
    }

    /// The content before an unsure write, or the written one.
    pub fn either(before: Option<Content>, after: Content) -> ReadCheck {
        ReadCheck { offset: 0, candidates: [before, Some(after)], alive: 0b11 }
    }

    /// Takes one data chunk.
    pub fn data(&mut self, data: &[u8]) {
        for (i, candidate) in self.candidates.iter().enumerate() {
            if !candidate.is_some_and(|c| c.matches(self.offset, data)) {
                self.alive &= !(1 << i);
            }
        }
        self.offset += data.len() as u64;
    }

    /// The read ended well: keep the candidates of exactly this length.
    pub fn end_ok(&mut self) {
        for (i, candidate) in self.candidates.iter().enumerate() {
            if !candidate.is_some_and(|c| c.len == self.offset) {
                self.alive &= !(1 << i);
            }
        }
    }

    /// The read ended with ENOENT: keep the missing-file candidate.
    pub fn end_missing(&mut self) {
        for (i, candidate) in self.candidates.iter().enumerate() {
            if candidate.is_some() || self.offset > 0 {
                self.alive &= !(1 << i);
            }
        }
    }
}

/// The data still to send for a write.
#[derive(Debug, Clone)]
pub struct WriteStream {
    /// What is written.
    pub content: Content,
    /// Bytes per data frame.
    pub chunk: usize,
    /// Bytes sent so far.
    pub sent: u64,
    /// Data frames sent so far (the end-of-stream one included).
    pub frames: u32,
    /// Whether the end-of-stream chunk was sent.
    pub ended: bool,
}

/// A call in flight.
#[derive(Debug, Clone)]
pub struct Call {
    /// What was asked.
    pub op: Op,
    /// Why.
    pub role: Role,
    /// Guest-stream sequence number of the request, once the relay forwarded it.
    pub request_seq: Option<u64>,
    /// Writes: sequence number of the end-of-stream chunk.
    pub eof_seq: Option<u64>,
    /// Space the call may hold in the agent.
    pub reserve: Reservation,
    /// Writes: the space watch.
    pub watch: Option<u64>,
    /// Read-only calls: the answer the model expects, fixed when the call
    /// was sent (later calls may change the filesystem before it ends).
    pub expect: Option<Expect>,
    /// Reads: the data check.
    pub read: Option<ReadCheck>,
    /// Writes: the stream.
    pub stream: Option<WriteStream>,
}

/// A write whose end of stream reached the agent on a connection that was
/// lost before the answer came back: committed, or refused for space.
#[derive(Debug, Clone)]
pub struct OpenWrite {
    /// Target file.
    pub path: String,
    /// The content written.
    pub content: Content,
    /// The file before: permission bits and content (`None`: missing).
    pub before: Option<(u32, Content)>,
    /// Permission bits after a commit.
    pub after_perm: u32,
    /// Bit 0: "before" fits what the probes saw; bit 1: "after" does.
    pub alive: u8,
    /// Probes not answered yet.
    pub probes_left: u8,
    /// Whether probes were sent on the current connection.
    pub probing: bool,
    /// Whether a shutdown cut a probe short: the filesystem itself decides
    /// at the end of the run.
    pub inconclusive: bool,
    /// The write's space reservation, held until resolved.
    pub reserve: Reservation,
    /// The write's space watch.
    pub watch: u64,
}

/// How the first terminal frame of a call ended it.
pub struct Ended {
    /// "unknown write session" answers still allowed for this id (a write
    /// that failed while its later chunks were on their way).
    pub extra_answers: u32,
}

/// Checks the terminal frame of `call`, applies its effect to the model,
/// and updates the open writes its probes resolve.
pub fn finish(call: &mut Call, message: &Message<'_>, who: &str, shared: &mut Shared, open: &mut [OpenWrite]) -> Ended {
    let answered_after_shutdown = shared.shutdown_seq.is_some_and(|s| call.request_seq.is_none_or(|r| r > s));
    if answered_after_shutdown || call.request_seq.is_none() {
        violation!("{who}: {:?} answered though the agent never got it before the shutdown", call.op);
    }
    let extra_answers = match call.role {
        Role::Normal => {
            shared.faults.current_ops += u64::from(call.op.is_current());
            finish_normal(call, message, who, shared)
        }
        Role::Corrupt(answer) => {
            finish_corrupt(answer, message, who);
            0
        }
        Role::Flood => {
            finish_flood(message, who);
            0
        }
        Role::LinkProbe => {
            let r = response(message, &call.op, who);
            let gone = (r.ok && r.error.is_none()) || r.error == Some("remove: No such file or directory (os error 2)");
            if !gone || r.data.is_some() {
                violation!("{who}: {:?} of an undecided symlink answered {r:?}", call.op);
            }
            0
        }
        Role::Probe { target, stat } => {
            finish_probe(call, message, stat, &mut open[target], who, shared);
            0
        }
    };
    Ended { extra_answers }
}

fn response<'m>(message: &'m Message<'_>, op: &Op, who: &str) -> &'m FsResponse<'m> {
    match &message.body {
        Body::FsResponse(r) => r,
        other => violation!("{who}: {op:?} answered with {other:?}"),
    }
}

fn finish_normal(call: &mut Call, message: &Message<'_>, who: &str, shared: &mut Shared) -> u32 {
    let r = response(message, &call.op, who);
    if r.error == Some(SHUTDOWN_ABORT) {
        check_shutdown_abort(call, who, shared);
        return call.stream.as_ref().map_or(0, |s| s.frames);
    }
    match &call.op {
        Op::Write { .. } => finish_write(call, r, who, shared),
        Op::Symlink { .. } if r.error == Some(SYMLINK_NO_SPACE) => {
            // Its target takes a block: allowed when the space bound says so.
            if !call.watch.take().is_some_and(|token| shared.space.unwatch(token)) {
                violation!("{who}: {:?} answered {SYMLINK_NO_SPACE:?}, but space could not run out", call.op);
            }
            shared.faults.no_space += 1;
            0
        }
        Op::Read(_) => {
            finish_read(call, r, who);
            0
        }
        op => {
            let expect = match &call.expect {
                Some(fixed) => fixed.clone(),
                None => shared.model.apply(op),
            };
            if let Err(why) = compare(&expect, r, shared.now) {
                violation!("{who}: {op:?}: {why}");
            }
            0
        }
    }
}

fn check_shutdown_abort(call: &Call, who: &str, shared: &Shared) {
    let Some(shutdown) = shared.shutdown_seq else {
        violation!("{who}: {:?} answered {SHUTDOWN_ABORT:?} without a shutdown", call.op);
    };
    if !matches!(call.op, Op::Read(_) | Op::Write { .. }) {
        violation!("{who}: {:?} is no session, yet answered {SHUTDOWN_ABORT:?}", call.op);
    }
    if call.eof_seq.is_some_and(|eof| eof < shutdown) {
        violation!("{who}: {:?} ended its stream before the shutdown, yet was aborted", call.op);
    }
}

fn finish_write(call: &mut Call, r: &FsResponse<'_>, who: &str, shared: &mut Shared) -> u32 {
    let Op::Write { path, mode, content } = &call.op else { unreachable!("a write call") };
    let stream = call.stream.as_mut().expect("a write has a stream");
    let could_run_out = call.watch.take().is_some_and(|token| shared.space.unwatch(token));
    let predicted = shared.model.write_check(path);
    match (r.ok, predicted, r.error) {
        (true, Ok(()), None) if stream.ended => {
            if let Err(e) = shared.model.write(path, *mode, *content) {
                violation!("{who}: {:?} acknowledged, but the model cannot commit it: {e}", call.op);
            }
            0
        }
        (false, Err(e), Some(error)) if error == format!("write: {e}") => stream.frames,
        (false, Ok(()), Some(NO_SPACE)) if could_run_out => {
            shared.faults.no_space += 1;
            stream.frames
        }
        (ok, predicted, error) => violation!(
            "{who}: {:?} (end of stream sent: {}) answered ok={ok} {error:?}; the model predicts {predicted:?} \
             (running out of space {})",
            call.op,
            stream.ended,
            if could_run_out { "possible" } else { "impossible" }
        ),
    }
}

fn finish_read(call: &mut Call, r: &FsResponse<'_>, who: &str) {
    let expect = call.expect.as_ref().expect("a read has an expectation");
    match (expect, call.read.as_mut()) {
        (Expect::Read(_), Some(check)) if r.ok && r.error.is_none() && r.data.is_none() => {
            check.end_ok();
            if check.alive == 0 {
                violation!("{who}: {:?} ended after {} bytes; expected {expect:?}", call.op, check.offset);
            }
        }
        (expect, _) => {
            if let Err(why) = compare(expect, r, 0) {
                violation!("{who}: {:?}: {why}", call.op);
            }
        }
    }
}

fn finish_corrupt(answer: CorruptAnswer, message: &Message<'_>, who: &str) {
    let fits = match answer {
        CorruptAnswer::Response => matches!(message.body, Body::FsResponse(_)),
        CorruptAnswer::Error => matches!(message.body, Body::Error(_)),
        CorruptAnswer::Silence => false,
    };
    if !fits {
        violation!("{who}: a corrupted request expecting {answer:?} was answered {:?}", message.body);
    }
}

fn finish_flood(message: &Message<'_>, who: &str) {
    let Body::FsResponse(FsResponse { ok: true, error: None, data: Some(FsResponseData::List(list)) }) = &message.body
    else {
        violation!("{who}: a List of / was answered {:?}", message.body);
    };
    if let Some(entry) = list.iter().find(|e| e.kind != FsEntryKind::Dir || !e.path.starts_with("/c")) {
        violation!("{who}: a List of / has {entry:?}, which no client made");
    }
}

fn finish_probe(call: &mut Call, message: &Message<'_>, stat: bool, open: &mut OpenWrite, who: &str, shared: &Shared) {
    let r = response(message, &call.op, who);
    open.probes_left -= 1;
    if r.error == Some(SHUTDOWN_ABORT) {
        check_shutdown_abort(call, who, shared);
        open.inconclusive = true;
        return;
    }
    let seen = if stat {
        stat_probe(open, r)
    } else {
        let check = call.read.as_mut().expect("a read probe has a check");
        match (r.ok, r.error) {
            (true, None) => check.end_ok(),
            (false, Some("read: No such file or directory (os error 2)")) => check.end_missing(),
            _ => check.alive = 0,
        }
        check.alive
    };
    open.alive &= seen;
}

/// Which of "before" (bit 0) and "after" (bit 1) a `Stat` answer fits.
fn stat_probe(open: &OpenWrite, r: &FsResponse<'_>) -> u8 {
    let fits = |file: Option<(u32, Content)>| match (file, r.ok, r.error, &r.data) {
        (None, false, Some("stat: No such file or directory (os error 2)"), None) => true,
        (Some((perm, content)), true, None, Some(FsResponseData::Stat(i))) => {
            i.kind == FsEntryKind::File && i.size == content.len && i.mode == mode::FILE | perm
        }
        _ => false,
    };
    u8::from(fits(open.before)) | u8::from(fits(Some((open.after_perm, open.content)))) << 1
}

/// The model's view of a reported entry.
fn info(i: &FsEntryInfo<'_>, now: u64) -> Result<Info, String> {
    let kind = match i.kind {
        FsEntryKind::File => "file",
        FsEntryKind::Dir => "dir",
        FsEntryKind::Symlink => "symlink",
        other => return Err(format!("{} has kind {other:?}", i.path)),
    };
    let newest = ((UNIX_BASE_NS + now) / 1_000_000_000) as i64;
    let oldest = (UNIX_BASE_NS / 1_000_000_000) as i64 - 1;
    if !i.modified.is_some_and(|s| (oldest..=newest).contains(&s)) {
        return Err(format!("{} modified {:?}, outside {oldest}..={newest}", i.path, i.modified));
    }
    Ok(Info { path: i.path.to_string(), kind, size: i.size, mode: i.mode })
}

/// Whether an answer is what the model expects; why not otherwise.
fn compare(expect: &Expect, r: &FsResponse<'_>, now: u64) -> Result<(), String> {
    let fits = match (expect, r.ok, r.error, &r.data) {
        (Expect::Done, true, None, None) => true,
        (Expect::Failed(m), false, Some(e), None) => m == e,
        (Expect::Stat(want), true, None, Some(FsResponseData::Stat(i))) => info(i, now)? == *want,
        (Expect::Path(want), true, None, Some(FsResponseData::Path(got))) => want == got,
        (Expect::List(want), true, None, Some(FsResponseData::List(list))) => {
            let mut got = list.iter().map(|i| info(&i, now)).collect::<Result<Vec<_>, _>>()?;
            got.sort();
            got == *want
        }
        _ => false,
    };
    if fits { Ok(()) } else { Err(format!("expected {expect:?}, got {r:?}")) }
}
