//! Golden vector files: locating, loading, and rendering decoded payloads
//! in the vectors' serde-JSON form for field-by-field comparison.
//!
//! The files come from `WIRE_VECTORS` / `WIRE_INVALID_VECTORS` when set
//! (relative paths are taken from the workspace root), otherwise from
//! `../shared/vectors/`, otherwise from the copy in `tests/vectors/`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use wire::{Body, FsEntryInfo, FsOp, FsResponseData, FsSetAttrs};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Resolves a vector file: the env var, then `../shared/vectors/NAME`, then `tests/vectors/NAME`.
pub fn vector_path(env_var: &str, name: &str) -> PathBuf {
    let root = workspace_root();
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if path.is_absolute() { path } else { root.join(path) };
    }
    let shared = root.join("../shared/vectors").join(name);
    if shared.exists() { shared } else { root.join("tests/vectors").join(name) }
}

/// Loads a vector file as a JSON array.
pub fn load(env_var: &str, name: &str) -> (PathBuf, Vec<Value>) {
    let path = vector_path(env_var, name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let Value::Array(items) = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    else {
        panic!("{}: not a JSON array", path.display());
    };
    (path, items)
}

/// The public (valid) vectors.
pub fn public() -> (PathBuf, Vec<Value>) {
    load("WIRE_VECTORS", "public.json")
}

/// The malformed and non-canonical vectors.
pub fn invalid() -> (PathBuf, Vec<Value>) {
    load("WIRE_INVALID_VECTORS", "invalid.json")
}

/// Decodes a hex string.
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

/// Encodes bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rebuilds the data of a large vector from its `payload_rule`
/// (`{"len": N, "byte_i": "i % M"}`).
pub fn rule_data(rule: &Value) -> Vec<u8> {
    let len = rule["len"].as_u64().expect("payload_rule.len") as usize;
    let expr = rule["byte_i"].as_str().expect("payload_rule.byte_i");
    let modulus: usize = expr
        .strip_prefix("i % ")
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or_else(|| panic!("unsupported payload_rule.byte_i {expr:?}"));
    (0..len).map(|i| (i % modulus) as u8).collect()
}

fn entry_json(e: &FsEntryInfo<'_>) -> Value {
    let mut v = json!({
        "path": e.path,
        "kind": e.kind.as_str(),
        "size": e.size,
        "mode": e.mode,
        "modified": e.modified,
    });
    if let Some(x) = &e.extra {
        v["uid"] = json!(x.uid);
        v["gid"] = json!(x.gid);
        v["atime"] = json!(x.atime);
        v["mtime"] = json!(x.mtime);
    }
    v
}

fn attrs_json(a: &FsSetAttrs) -> Value {
    json!({ "mode": a.mode, "uid": a.uid, "gid": a.gid, "size": a.size, "atime": a.atime, "mtime": a.mtime })
}

/// Renders an operation as serde-JSON renders the reference's value of the
/// same shape (seed-era or current).
pub fn op_json(op: &FsOp<'_>) -> Value {
    let body = match *op {
        FsOp::Stat { path, follow_symlink: None }
        | FsOp::RemoveDir { path, recursive: None }
        | FsOp::List { path }
        | FsOp::Read { path }
        | FsOp::Mkdir { path }
        | FsOp::Remove { path }
        | FsOp::RealPath { path }
        | FsOp::ReadLink { path }
        | FsOp::OpenDir { path } => json!({ "path": path }),
        FsOp::Stat { path, follow_symlink: Some(f) } => json!({ "path": path, "follow_symlink": f }),
        FsOp::RemoveDir { path, recursive: Some(r) } => json!({ "path": path, "recursive": r }),
        FsOp::SetStat { path, follow_symlink, attrs } => {
            json!({ "path": path, "follow_symlink": follow_symlink, "attrs": attrs_json(&attrs) })
        }
        FsOp::Symlink { target, link_path, user } => json!({ "target": target, "link_path": link_path, "user": user }),
        FsOp::Write { path, mode } => json!({ "path": path, "mode": mode }),
        FsOp::MkdirWith { path, mode, user } => json!({ "path": path, "mode": mode, "user": user }),
        FsOp::Copy { src, dst } | FsOp::Rename { src, dst } => json!({ "src": src, "dst": dst }),
        FsOp::OpenFile { path, options: o } => json!({ "path": path, "options": {
            "read": o.read, "write": o.write, "append": o.append, "create": o.create,
            "truncate": o.truncate, "create_new": o.create_new, "mode": o.mode, "user": o.user,
        }}),
        FsOp::CloseHandle { handle } | FsOp::FStat { handle } => json!({ "handle": handle }),
        FsOp::ReadHandle { handle, offset, len } | FsOp::WriteHandle { handle, offset, len } => {
            json!({ "handle": handle, "offset": offset, "len": len })
        }
        FsOp::ReadDir { handle, limit } => json!({ "handle": handle, "limit": limit }),
        FsOp::FSetStat { handle, attrs } => json!({ "handle": handle, "attrs": attrs_json(&attrs) }),
    };
    let mut m = Map::new();
    m.insert(op.name().to_string(), body);
    Value::Object(m)
}

/// Renders a decoded payload exactly as serde-JSON renders the reference's
/// Rust value: declaration order, skipped fields absent, bytes as arrays.
pub fn body_json(body: &Body<'_>) -> Value {
    match body {
        Body::InitResolved(p) => {
            json!({ "default_user": { "uid": p.default_user.uid, "gid": p.default_user.gid } })
        }
        Body::InitAck(_) | Body::Ping(_) | Body::Pong(_) => json!({}),
        Body::Ready(p) => {
            let mut v = json!({
                "boot_time_ns": p.boot_time_ns,
                "init_time_ns": p.init_time_ns,
                "ready_time_ns": p.ready_time_ns,
            });
            if !p.agent_version.is_empty() {
                v["agent_version"] = json!(p.agent_version);
            }
            v
        }
        Body::ClockSync(p) => json!({ "unix_time_nanos": p.unix_time_nanos }),
        Body::Error(p) => {
            let mut v = json!({ "kind": p.kind.as_str(), "message": p.message });
            if let Some(t) = p.offending_type {
                v["offending_type"] = json!(t);
            }
            v
        }
        Body::RelayClientDisconnected(p) => {
            json!({ "id_start": p.id_start, "id_end_exclusive": p.id_end_exclusive })
        }
        Body::FsRequest(p) => {
            let mut v = json!({ "op": op_json(&p.op) });
            if let Some(b) = &p.bulk {
                v["bulk"] = json!({
                    "format": b.format,
                    "max_record_payload": b.max_record_payload,
                    "guest_to_host_credit_limit": b.guest_to_host_credit_limit,
                });
            }
            v
        }
        Body::FsData(p) => json!({ "data": p.data }),
        Body::FsResponse(p) => {
            let data = match &p.data {
                None => Value::Null,
                Some(FsResponseData::Stat(e)) => json!({ "Stat": entry_json(e) }),
                Some(FsResponseData::List(list)) => {
                    json!({ "List": list.iter().map(|e| entry_json(&e)).collect::<Vec<_>>() })
                }
                Some(FsResponseData::Handle(h)) => json!({ "Handle": h }),
                Some(FsResponseData::Path(path)) => json!({ "Path": path }),
            };
            json!({ "ok": p.ok, "error": p.error, "data": data })
        }
        Body::Shutdown(_) => Value::Null,
        Body::RelayFlow(p) => {
            json!({ "id_start": p.id_start, "id_end_exclusive": p.id_end_exclusive, "paused": p.paused })
        }
    }
}
