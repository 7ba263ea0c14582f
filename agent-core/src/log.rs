//! Logging through `defmt` when the `defmt` feature is on and the target is
//! bare metal (the guest, which provides the logger); nothing otherwise (the
//! arguments are still evaluated for type checks only). A host build that
//! gets the feature through workspace feature unification (`cargo test
//! --workspace`) therefore needs no defmt logger to link.

/// Logs at info level.
macro_rules! info {
    ($($arg:tt)*) => {{
        #[cfg(all(feature = "defmt", target_os = "none"))]
        defmt::info!($($arg)*);
        #[cfg(not(all(feature = "defmt", target_os = "none")))]
        $crate::log::discard!($($arg)*);
    }};
}

/// Logs at warning level.
macro_rules! warning {
    ($($arg:tt)*) => {{
        #[cfg(all(feature = "defmt", target_os = "none"))]
        defmt::warn!($($arg)*);
        #[cfg(not(all(feature = "defmt", target_os = "none")))]
        $crate::log::discard!($($arg)*);
    }};
}

/// Logs at error level.
macro_rules! error {
    ($($arg:tt)*) => {{
        #[cfg(all(feature = "defmt", target_os = "none"))]
        defmt::error!($($arg)*);
        #[cfg(not(all(feature = "defmt", target_os = "none")))]
        $crate::log::discard!($($arg)*);
    }};
}

/// Uses the arguments without formatting them.
#[cfg_attr(all(feature = "defmt", target_os = "none"), allow(unused_macros))]
macro_rules! discard {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        $(let _ = &$arg;)*
    }};
}

#[cfg_attr(all(feature = "defmt", target_os = "none"), allow(unused_imports))]
pub(crate) use discard;
pub(crate) use {error, info, warning};
