//! Path normalization: every path the agent hands to a [`Filesystem`]
//! is absolute and canonical (`/` or `/a/b`: no empty, `.` or `..`
//! components, no trailing `/`).
//!
//! [`Filesystem`]: crate::Filesystem

use crate::error::FsError;

/// The longest normalized path in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// The longest path component in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// A normalized path, stored inline.
pub type PathBuf = heapless::String<MAX_PATH_LEN>;

/// Normalizes `path` into `out`: `//` collapses, `.` is dropped, `..`
/// removes the previous component but never goes above `/`, a trailing
/// `/` is dropped. A relative path is taken from `/`. An empty path names
/// nothing ([`FsError::NotFound`], as on Linux).
pub fn normalize(path: &str, out: &mut PathBuf) -> Result<(), FsError> {
    out.clear();
    if path.is_empty() {
        return Err(FsError::NotFound);
    }
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            name => {
                if name.len() > MAX_NAME_LEN {
                    return Err(FsError::NameTooLong);
                }
                if name.contains('\0') {
                    return Err(FsError::InvalidPath);
                }
                out.push('/').map_err(|_| FsError::PathTooLong)?;
                out.push_str(name).map_err(|_| FsError::PathTooLong)?;
            }
        }
    }
    if out.is_empty() {
        // `/` itself; cannot fail on an empty string.
        let _ = out.push('/');
    }
    Ok(())
}

/// Splits a normalized path into its parent and final name: `/a/b` ->
/// (`/a`, `b`), `/a` -> (`/`, `a`). `None` for `/`.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let at = path.rfind('/')?;
    let name = &path[at + 1..];
    if name.is_empty() {
        return None;
    }
    Some((if at == 0 { "/" } else { &path[..at] }, name))
}

/// The components of a normalized path (none for `/`).
pub fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// What Rust's `Path::parent` gives for `path` (a prefix of it, by
/// components: trailing `/` and `.` components are not components), as
/// `std::fs::create_dir_all` walks it: `/a/b/` -> `/a`, `/a/./b/.` -> `/a`,
/// `/a/..` -> `/a`, `/a` -> `/`, `a` -> `` (the empty path); `None` for `/`
/// and the empty path.
pub fn std_parent(path: &str) -> Option<&str> {
    let rest = trim_end(path);
    if rest.is_empty() || rest == "/" {
        return None;
    }
    let last = rest.rfind('/').map_or(0, |at| at + 1);
    Some(trim_end(&rest[..last]))
}

/// What Rust's `Path::file_name` gives for `path`: its final component
/// unless that is `..` (trailing `/` and `.` components do not count):
/// `/a/b/` -> `b`, `/a/.` -> `a`, `/a/..` and `/` -> `None`.
pub fn std_file_name(path: &str) -> Option<&str> {
    let rest = trim_end(path);
    let name = &rest[rest.rfind('/').map_or(0, |at| at + 1)..];
    match name {
        "" | "." | ".." => None,
        name => Some(name),
    }
}

/// `path` without trailing separators and `.` components, keeping a
/// leading `/` and a leading `.` of a relative path (Rust's
/// `Components::trim_right`).
fn trim_end(mut path: &str) -> &str {
    loop {
        if path.len() > 1 && path.ends_with('/') {
            path = &path[..path.len() - 1];
        } else if path.len() > 2 && path.ends_with("/.") {
            path = &path[..path.len() - 2];
        } else {
            return path;
        }
    }
}

/// Whether normalized `path` is `ancestor` or lies below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor == "/" || path == ancestor || (path.starts_with(ancestor) && path.as_bytes()[ancestor.len()] == b'/')
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn norm(p: &str) -> Result<PathBuf, FsError> {
        let mut out = PathBuf::new();
        normalize(p, &mut out).map(|()| out)
    }

    #[test]
    fn normalizes_like_a_lexical_realpath() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/a//b/", "/a/b"),
            ("/a/./b/.", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/../../x", "/x"),
            ("/a/..", "/"),
            ("a/b", "/a/b"),
            (".", "/"),
        ] {
            assert_eq!(norm(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn enforces_the_limits() {
        assert_eq!(norm(""), Err(FsError::NotFound));
        assert_eq!(norm(&"x".repeat(MAX_NAME_LEN + 1)), Err(FsError::NameTooLong));
        assert!(norm(&"x".repeat(MAX_NAME_LEN)).is_ok());
        let deep = "/abcdefg".repeat(MAX_PATH_LEN / 8);
        assert_eq!(norm(&deep).unwrap().len(), MAX_PATH_LEN);
        assert_eq!(norm(&(deep + "/a")), Err(FsError::PathTooLong));
        assert_eq!(norm("/a\0b"), Err(FsError::InvalidPath));
    }

    #[test]
    fn splits_and_relates_paths() {
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/"), None);
        assert!(is_within("/a/b", "/a") && is_within("/a", "/a") && is_within("/x", "/"));
        assert!(!is_within("/ab", "/a") && !is_within("/a", "/a/b"));
        assert_eq!(components("/a/b").collect::<heapless::Vec<_, 4>>().as_slice(), ["a", "b"]);
    }

    #[test]
    fn file_names_as_rust_paths_have_them() {
        for (input, want) in [
            ("/a/b", Some("b")),
            ("/a/b/", Some("b")),
            ("/a/.", Some("a")),
            ("/a/..", None),
            ("/", None),
            ("", None),
            ("a", Some("a")),
            (".", None),
        ] {
            assert_eq!(std_file_name(input), want, "{input}");
        }
    }

    #[test]
    fn parents_as_rust_paths_have_them() {
        for (input, want) in [
            ("/a/b", Some("/a")),
            ("/a/b/", Some("/a")),
            ("/a/./b/.", Some("/a")),
            ("/a/..", Some("/a")),
            ("/a", Some("/")),
            ("//a//", Some("/")),
            ("/", None),
            ("//", None),
            ("", None),
            ("a", Some("")),
            ("a/b", Some("a")),
            ("./a", Some(".")),
        ] {
            assert_eq!(std_parent(input), want, "{input}");
        }
    }
}
