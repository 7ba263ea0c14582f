//! Logging through `defmt` when the `defmt` feature is on; nothing
//! otherwise (the arguments are still evaluated for type checks only).

/// Logs at info level.
macro_rules! info {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::info!($($arg)*);
        #[cfg(not(feature = "defmt"))]
        $crate::log::discard!($($arg)*);
    }};
}

/// Logs at warning level.
macro_rules! warning {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::warn!($($arg)*);
        #[cfg(not(feature = "defmt"))]
        $crate::log::discard!($($arg)*);
    }};
}

/// Logs at error level.
macro_rules! error {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::error!($($arg)*);
        #[cfg(not(feature = "defmt"))]
        $crate::log::discard!($($arg)*);
    }};
}

/// Uses the arguments without formatting them.
#[cfg_attr(feature = "defmt", allow(unused_macros))]
macro_rules! discard {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        $(let _ = &$arg;)*
    }};
}

#[cfg_attr(feature = "defmt", allow(unused_imports))]
pub(crate) use discard;
pub(crate) use {error, info, warning};
