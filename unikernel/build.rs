//! Links the guest binaries at their load address with the shared linker
//! script; those that log also get defmt's, which places the interned log
//! strings in a non-loaded section (the boot floor does not log: defmt's
//! script would demand a logger).

/// The binaries that link the library and so log through defmt.
const DEFMT_BINS: &[&str] = &["unikernel", "stock_echo"];

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    for bin in DEFMT_BINS {
        println!("cargo:rustc-link-arg-bin={bin}=-Tdefmt.x");
    }
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=--build-id=none");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
}
