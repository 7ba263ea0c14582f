//! How entries are shown: `ls -l`-style lines and `stat` blocks for a
//! person (human sizes, local dates, colours only when asked), and JSON
//! documents for scripts.
//!
//! The JSON is a stable interface: an entry is an object with the
//! protocol's `FsEntryInfo` field names and types (`path`, `kind` as
//! `"file"|"dir"|"symlink"|"other"` or the guest's own word, `size`,
//! `mode` as the full `st_mode`, `modified` in Unix seconds or `null`);
//! a listing is `{"path": DIR, "entries": [ENTRY...]}` sorted by path.
//! Fields may be added in later versions; none is renamed or removed.

use std::ffi::OsStr;

use chrono::{DateTime, SecondsFormat, TimeZone};
use serde::Serialize;

use crate::fs::{Entry, EntryKind};

/// An entry modified less than this long ago (and not in the future)
/// shows its time of day in `ls`; older ones show their year, as `ls`
/// does (half of an average Gregorian year).
pub const RECENT_SECS: i64 = 31_556_952 / 2;

/// The width of the date column of an `ls` line (`Dec  3 09:29`).
pub const DATE_WIDTH: usize = 12;

/// Size units above bytes, each 1024 times the one before.
const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];

/// The bytes in one step of [`UNITS`].
const UNIT_STEP: u64 = 1024;

/// The protocol's name for a kind (`file`, `dir`, `symlink`, `other`), or
/// the guest's own word for a kind this client does not know.
pub fn kind_name(kind: &EntryKind) -> &str {
    kind.as_str()
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

/// The type letter of an `ls -l` line: from the kind, and for `other`
/// from the mode's type bits (`p`, `s`, `c`, `b`).
pub fn type_letter(entry: &Entry) -> char {
    match entry.kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Other | EntryKind::Unknown(_) => match entry.mode & 0o170_000 {
            0o010_000 => 'p',
            0o140_000 => 's',
            0o020_000 => 'c',
            0o060_000 => 'b',
            _ => '?',
        },
    }
}

/// A size as `ls -h` shows it: bytes below 1024 (`1023`), then one
/// decimal below ten units (`1.5K`), then whole units (`12M`), rounded
/// to nearest.
pub fn human_size(bytes: u64) -> String {
    if bytes < UNIT_STEP {
        return bytes.to_string();
    }
    let mut scale = u128::from(UNIT_STEP);
    for (i, unit) in UNITS.iter().enumerate() {
        let tenths = (u128::from(bytes) * 10 + scale / 2) / scale;
        if tenths < 100 {
            return format!("{}.{}{unit}", tenths / 10, tenths % 10);
        }
        let whole = (u128::from(bytes) + scale / 2) / scale;
        if whole < u128::from(UNIT_STEP) || i == UNITS.len() - 1 {
            return format!("{whole}{unit}");
        }
        scale *= u128::from(UNIT_STEP);
    }
    bytes.to_string()
}

/// The date column of an `ls` line, [`DATE_WIDTH`] wide: `Dec  3 09:29`
/// for a recent time, `Dec  3  2024` for an old or future one, `-` when
/// the guest does not know it.
pub fn ls_date<Tz: TimeZone>(modified: Option<i64>, now: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let Some(t) = modified else { return format!("{:>DATE_WIDTH$}", "-") };
    let Some(utc) = DateTime::from_timestamp(t, 0) else { return format!("{:>DATE_WIDTH$}", "?") };
    let local = utc.with_timezone(tz);
    let recent = t <= now && now.saturating_sub(t) < RECENT_SECS;
    if recent { local.format("%b %e %H:%M").to_string() } else { local.format("%b %e  %Y").to_string() }
}

/// A time as ISO 8601 in `tz` (`2026-12-03T09:29:34+01:00`, `Z` for
/// UTC); `None` when chrono cannot represent it.
pub fn iso8601<Tz: TimeZone>(t: i64, tz: &Tz) -> Option<String>
where
    Tz::Offset: std::fmt::Display,
{
    Some(DateTime::from_timestamp(t, 0)?.with_timezone(tz).to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Whether to colour output: only on a terminal, and only when
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour_wanted(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Whether to colour this process's standard output.
pub fn colour_for_stdout() -> bool {
    use std::io::IsTerminal;
    colour_wanted(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

/// The last component of a guest path (`/a/b.txt` -> `b.txt`, `/` -> `/`).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').find(|part| !part.is_empty()).unwrap_or(path)
}

/// The SGR colour of a name in a listing, as `ls --color` picks it.
fn name_colour(entry: &Entry) -> Option<&'static str> {
    match entry.kind {
        EntryKind::Dir => Some("1;34"),
        EntryKind::Symlink => Some("1;36"),
        EntryKind::File if entry.mode & 0o111 != 0 => Some("1;32"),
        EntryKind::File => None,
        EntryKind::Other | EntryKind::Unknown(_) => Some("1;33"),
    }
}

/// A directory listing, `ls -l` style, one line per entry, sorted by
/// name, sizes right-aligned: `drwxr-xr-x    0 Dec  3 09:29 name`.
/// `now` (Unix seconds) decides which dates are recent.
pub fn listing<Tz: TimeZone>(entries: &[Entry], now: i64, tz: &Tz, colour: bool) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let sizes: Vec<String> = sorted.iter().map(|e| human_size(e.size)).collect();
    let width = sizes.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (e, size) in sorted.iter().zip(&sizes) {
        let name = file_name(&e.path);
        let name = match name_colour(e) {
            Some(sgr) if colour => format!("\x1b[{sgr}m{name}\x1b[0m"),
            _ => name.to_string(),
        };
        out.push_str(&format!(
            "{}{} {size:>width$} {} {name}\n",
            type_letter(e),
            permissions(e.mode),
            ls_date(e.modified, now, tz)
        ));
    }
    out
}

/// What `stat` shows: path, kind (protocol spelling), size (with a human
/// size from 1 KiB up), mode (octal and `ls` letters) and the modification
/// time in ISO 8601 in `tz`.
pub fn stat_text<Tz: TimeZone>(e: &Entry, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let size = if e.size < UNIT_STEP { e.size.to_string() } else { format!("{} ({})", e.size, human_size(e.size)) };
    let modified = match e.modified {
        Some(t) => iso8601(t, tz).unwrap_or_else(|| format!("{t} (Unix seconds, beyond the calendar)")),
        None => "unknown".into(),
    };
    format!(
        "path:     {}\nkind:     {}\nsize:     {size}\nmode:     {:o} ({}{})\nmodified: {modified}\n",
        e.path,
        kind_name(&e.kind),
        e.mode,
        type_letter(e),
        permissions(e.mode),
    )
}

/// One entry in JSON: the protocol's `FsEntryInfo` field names, in order.
#[derive(Serialize)]
struct JsonEntry<'a> {
    path: &'a str,
    kind: &'a str,
    size: u64,
    mode: u32,
    modified: Option<i64>,
}

impl<'a> JsonEntry<'a> {
    fn new(e: &'a Entry) -> JsonEntry<'a> {
        JsonEntry { path: &e.path, kind: kind_name(&e.kind), size: e.size, mode: e.mode, modified: e.modified }
    }
}

/// A listing in JSON.
#[derive(Serialize)]
struct JsonListing<'a> {
    path: &'a str,
    entries: Vec<JsonEntry<'a>>,
}

fn to_json(value: &impl Serialize) -> String {
    // Serialising these plain structs into a String cannot fail; an empty
    // document would be caught by any consumer if it ever did.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// `stat --json`: one entry object.
pub fn stat_json(e: &Entry) -> String {
    to_json(&JsonEntry::new(e))
}

/// `ls --json`: `{"path": DIR, "entries": [...]}`, entries sorted by path.
pub fn list_json(dir: &str, entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    to_json(&JsonListing { path: dir, entries: sorted.into_iter().map(JsonEntry::new).collect() })
}

#[cfg(test)]
mod tests {
    use chrono::{FixedOffset, Utc};

    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64, mode: u32, modified: Option<i64>) -> Entry {
        Entry { path: path.into(), kind, size, mode, modified, uid: None, gid: None, accessed: None }
    }

    /// 2026-12-03T09:29:34Z
    const NOW: i64 = 1_796_290_174;

    #[test]
    fn kinds_use_the_protocol_words() {
        assert_eq!(kind_name(&EntryKind::File), "file");
        assert_eq!(kind_name(&EntryKind::Dir), "dir");
        assert_eq!(kind_name(&EntryKind::Symlink), "symlink");
        assert_eq!(kind_name(&EntryKind::Other), "other");
        assert_eq!(kind_name(&EntryKind::Unknown("socket".into())), "socket");
    }

    #[test]
    fn permissions_render_like_ls() {
        assert_eq!(permissions(0o100_644), "rw-r--r--");
        assert_eq!(permissions(0o755), "rwxr-xr-x");
        let fifo = entry("/p", EntryKind::Other, 0, 0o010_644, None);
        assert_eq!(type_letter(&fifo), 'p');
        assert_eq!(type_letter(&entry("/q", EntryKind::Other, 0, 0o644, None)), '?');
    }

    #[test]
    fn human_sizes_switch_units_at_their_bounds() {
        assert_eq!(human_size(0), "0");
        assert_eq!(human_size(UNIT_STEP - 1), "1023");
        assert_eq!(human_size(UNIT_STEP), "1.0K");
        assert_eq!(human_size(1536), "1.5K");
        // 9.95 KiB rounds to ten units, shown whole.
        assert_eq!(human_size(10_189), "10K");
        assert_eq!(human_size(10 * 1024 - 1), "10K");
        assert_eq!(human_size(1023 * 1024), "1023K");
        // Just under 1 MiB rounds up into the next unit.
        assert_eq!(human_size(1024 * 1024 - 1), "1.0M");
        assert_eq!(human_size(3 * 1024 * 1024 + 12_345), "3.0M");
        assert_eq!(human_size(1 << 30), "1.0G");
        assert_eq!(human_size(u64::MAX), "16E");
    }

    #[test]
    fn dates_show_the_time_when_recent_and_the_year_otherwise() {
        assert_eq!(ls_date(Some(NOW - 60), NOW, &Utc), "Dec  3 09:28");
        assert_eq!(ls_date(Some(NOW - RECENT_SECS + 1), NOW, &Utc).len(), DATE_WIDTH);
        assert!(ls_date(Some(NOW - RECENT_SECS + 1), NOW, &Utc).contains(':'));
        assert_eq!(ls_date(Some(NOW - RECENT_SECS), NOW, &Utc), "Jun  3  2026");
        assert_eq!(ls_date(Some(NOW + 3600), NOW, &Utc), "Dec  3  2026");
        assert_eq!(ls_date(None, NOW, &Utc), "           -");
        assert_eq!(ls_date(Some(i64::MAX), NOW, &Utc), "           ?");
        let paris = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(ls_date(Some(NOW - 60), NOW, &paris), "Dec  3 10:28");
    }

    #[test]
    fn iso_dates_carry_their_offset() {
        assert_eq!(iso8601(NOW, &Utc).unwrap(), "2026-12-03T09:29:34Z");
        let paris = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(iso8601(NOW, &paris).unwrap(), "2026-12-03T10:29:34+01:00");
        assert_eq!(iso8601(0, &Utc).unwrap(), "1970-01-01T00:00:00Z");
        assert!(iso8601(i64::MAX, &Utc).is_none());
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn listings_look_like_ls_l() {
        let entries = [
            entry("/d/zeta.bin", EntryKind::File, 3 << 20, 0o100_644, Some(NOW - 60)),
            entry("/d/sub", EntryKind::Dir, 0, 0o040_755, Some(NOW - 400 * 86_400)),
            entry("/d/run.sh", EntryKind::File, 12, 0o100_755, None),
        ];
        let plain = listing(&entries, NOW, &Utc, false);
        assert_eq!(
            plain,
            "-rwxr-xr-x   12            - run.sh\n\
             drwxr-xr-x    0 Oct 29  2025 sub\n\
             -rw-r--r-- 3.0M Dec  3 09:28 zeta.bin\n"
        );
        let coloured = listing(&entries, NOW, &Utc, true);
        assert!(coloured.contains("\x1b[1;32mrun.sh\x1b[0m"));
        assert!(coloured.contains("\x1b[1;34msub\x1b[0m"));
        assert!(coloured.contains(" zeta.bin\n"), "plain files stay plain: {coloured}");
        assert_eq!(listing(&[], NOW, &Utc, true), "");
    }

    #[test]
    fn stat_shows_protocol_kinds_and_iso_dates() {
        let e = entry("/d/f.txt", EntryKind::File, 11, 0o100_644, Some(NOW));
        assert_eq!(
            stat_text(&e, &Utc),
            "path:     /d/f.txt\nkind:     file\nsize:     11\nmode:     100644 (-rw-r--r--)\n\
             modified: 2026-12-03T09:29:34Z\n"
        );
        let big = entry("/big", EntryKind::Dir, 2048, 0o040_755, None);
        let text = stat_text(&big, &Utc);
        assert!(text.contains("kind:     dir\n"));
        assert!(text.contains("size:     2048 (2.0K)\n"));
        assert!(text.contains("modified: unknown\n"));
    }

    #[test]
    fn json_uses_the_protocol_field_names() {
        let entries = [
            entry("/d/b", EntryKind::Unknown("socket".into()), 0, 0o140_755, None),
            entry("/d/a", EntryKind::File, 11, 0o100_644, Some(NOW)),
        ];
        let doc: serde_json::Value = serde_json::from_str(&list_json("/d", &entries)).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "path": "/d",
                "entries": [
                    {"path": "/d/a", "kind": "file", "size": 11, "mode": 0o100_644, "modified": NOW},
                    {"path": "/d/b", "kind": "socket", "size": 0, "mode": 0o140_755, "modified": null},
                ]
            })
        );
        let one = stat_json(&entries[1]);
        let keys: Vec<&str> = one.lines().filter_map(|l| l.trim().split('"').nth(1)).collect();
        assert_eq!(keys, ["path", "kind", "size", "mode", "modified"], "field order is stable: {one}");
    }
}
